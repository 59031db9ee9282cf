package notify

import "fmt"

// Config is the deployment's choice of senders, as a config loader fills it (environment or
// flags); empty fields leave a channel off.
type Config struct {
	// WebhookURL receives every notification as a signed JSON POST; empty disables webhooks.
	WebhookURL string
	// WebhookSecret signs the webhook body (HMAC-SHA256); required with WebhookURL.
	WebhookSecret string
	// SMTPAddr (host:port) sends the shopper's emails; empty disables email.
	SMTPAddr string
	// SMTPFrom is the sender address; required with SMTPAddr.
	SMTPFrom string
	// SMTPUsername and SMTPPassword authenticate, when set.
	SMTPUsername, SMTPPassword string
	// SMTPTLS is how emails, which carry pickup codes, are encrypted on their way to SMTPAddr:
	// "starttls" (or empty) when the server offers it, "require" STARTTLS or send nothing (a
	// server not offering it, or a STARTTLS stripped on the way, is retried, then
	// dead-lettered), "implicit" TLS from the first byte (port 465).
	SMTPTLS string
}

// SMTP TLS modes (Config.SMTPTLS).
const (
	SMTPStartTLS = "starttls"
	SMTPRequire  = "require"
	SMTPImplicit = "implicit"
)

// CheckSMTPTLS says what is wrong with an SMTP TLS mode, or nil.
func CheckSMTPTLS(mode string) error {
	switch mode {
	case "", SMTPStartTLS, SMTPRequire, SMTPImplicit:
		return nil
	}
	return fmt.Errorf("want %s, %s or %s", SMTPStartTLS, SMTPRequire, SMTPImplicit)
}

// Senders builds the senders cfg enables, or reports what is wrong with it.
func (c Config) Senders() ([]Sender, error) {
	var out []Sender
	if c.WebhookURL != "" {
		w, err := NewWebhookSender(WebhookConfig{URL: c.WebhookURL, Secret: c.WebhookSecret})
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if c.SMTPAddr != "" {
		if err := CheckSMTPTLS(c.SMTPTLS); err != nil {
			return nil, fmt.Errorf("notify: SMTP TLS %q: %w", c.SMTPTLS, err)
		}
		s, err := NewSMTPSender(SMTPConfig{Addr: c.SMTPAddr, From: c.SMTPFrom, Username: c.SMTPUsername, Password: c.SMTPPassword,
			RequireTLS: c.SMTPTLS == SMTPRequire || c.SMTPTLS == SMTPImplicit, ImplicitTLS: c.SMTPTLS == SMTPImplicit})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
