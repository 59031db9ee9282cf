package notify

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
		s, err := NewSMTPSender(SMTPConfig{Addr: c.SMTPAddr, From: c.SMTPFrom, Username: c.SMTPUsername, Password: c.SMTPPassword})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
