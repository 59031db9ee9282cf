package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/money"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// SMTPConfig configures an SMTPSender.
type SMTPConfig struct {
	// Addr is the submission server, host:port.
	Addr string
	// From is the sender address, e.g. "Handoff <orders@example.com>".
	From string
	// Username and Password, when set, authenticate with PLAIN, which net/smtp allows only
	// over TLS or to localhost.
	Username, Password string
	// ImplicitTLS speaks TLS from the first byte (port 465); otherwise STARTTLS is used when
	// the server offers it.
	ImplicitTLS bool
	// RequireTLS refuses to send over a connection that could not be encrypted.
	RequireTLS bool
	// TLSConfig for STARTTLS and implicit TLS; nil means the system roots and Addr's host.
	TLSConfig *tls.Config
	// HelloName is sent with EHLO. Default "localhost".
	HelloName string
	// Timeout bounds one whole conversation. Default 30s.
	Timeout time.Duration
	// Location is the time zone times are shown in for an order that does not name its store's
	// (see hours.Location). Default UTC.
	Location *time.Location
	// Now is the clock for the Date header; nil means time.Now.
	Now func() time.Time
}

// SMTPSender emails the shopper a plain-text message per notification: what happened, the
// order id, the store, the state, the lines and total, and — for kinds after which the order
// can still be collected — the pickup code. Each message carries Message-ID
// <notification id@handoff> so mail clients fold duplicates.
//
// A 5xx reply about the recipient or the message (to RCPT TO: mailbox unknown; to DATA or the
// message: refused) and an address that does not parse are permanent. Everything else is
// retried: 4xx replies, connection trouble, and 5xx replies before the recipient (greeting,
// EHLO, STARTTLS, AUTH, MAIL FROM), which are about this deployment (a wrong or rotated
// password, a sender address not allowed) and would dead-letter every email alike.
type SMTPSender struct {
	cfg  SMTPConfig
	host string
	from *mail.Address
}

// NewSMTPSender checks cfg and returns the sender.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("notify: SMTP address %q must be host:port", cfg.Addr)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("notify: SMTP from address %q: %w", cfg.From, err)
	}
	if cfg.HelloName == "" {
		cfg.HelloName = "localhost"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return &SMTPSender{cfg: cfg, host: host, from: from}, nil
}

// Channel is "email".
func (*SMTPSender) Channel() string { return ChannelEmail }

// Send emails n to n.Recipient. Its errors are logged and stored as the notification's
// last_error: the shopper's address is cut out of them, mail servers' replies included (which
// often quote it: "550 5.1.1 <ada@example.com>: Recipient address rejected").
func (s *SMTPSender) Send(ctx context.Context, n Notification) error {
	to, err := mail.ParseAddress(n.Recipient)
	if err != nil {
		return hideRecipient(Permanent(fmt.Errorf("recipient is not an email address: %w", err)), n.Recipient)
	}
	return hideRecipient(s.send(ctx, n, to), n.Recipient, to.Address)
}

// recipientError is an error whose text has the recipient's address cut out; it unwraps to
// the original, so that Permanent and the reply code are still seen.
type recipientError struct {
	msg   string
	cause error
}

func (e *recipientError) Error() string { return e.msg }
func (e *recipientError) Unwrap() error { return e.cause }

// hideRecipient replaces the addresses (any case) in err's text with "<recipient>".
func hideRecipient(err error, addrs ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, a := range addrs {
		if a != "" {
			msg = regexp.MustCompile(`(?i)`+regexp.QuoteMeta(a)).ReplaceAllLiteralString(msg, "<recipient>")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &recipientError{msg: msg, cause: err}
}

func (s *SMTPSender) send(ctx context.Context, n Notification, to *mail.Address) error {
	msg := s.compose(n, to)

	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("connect to SMTP server %s: %w", s.cfg.Addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Cancellation (shutdown) ends the conversation too, not only the deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if s.cfg.ImplicitTLS {
		conn = tls.Client(conn, s.cfg.TLSConfig)
	}
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return classifySMTP("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(s.cfg.HelloName); err != nil {
		return classifySMTP("EHLO", err)
	}
	if !s.cfg.ImplicitTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(s.cfg.TLSConfig); err != nil {
				return classifySMTP("STARTTLS", err)
			}
		} else if s.cfg.RequireTLS {
			return fmt.Errorf("SMTP server %s does not offer STARTTLS and TLS is required", s.cfg.Addr)
		}
	}
	if s.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.host)); err != nil {
			return classifySMTP("AUTH", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return classifySMTP("MAIL FROM", err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return classifySMTP("RCPT TO", err)
	}
	w, err := c.Data()
	if err != nil {
		return classifySMTP("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return classifySMTP("DATA", err)
	}
	if err := w.Close(); err != nil {
		return classifySMTP("end of DATA", err)
	}
	// The server has taken the message; a failed QUIT does not undo that.
	_ = c.Quit()
	return nil
}

// messageSteps are the steps whose 5xx reply is about this recipient or message, so no retry
// can help; a 5xx at any other step is about the deployment (its credentials, its sender
// address, the server) and is retried with backoff, bounded by MaxAttempts, until it is fixed.
var messageSteps = map[string]bool{"RCPT TO": true, "DATA": true, "end of DATA": true}

// classifySMTP makes a 5xx reply to a step of messageSteps permanent; anything else is worth
// another try.
func classifySMTP(step string, err error) error {
	err = fmt.Errorf("SMTP %s: %w", step, err)
	var te *textproto.Error
	if messageSteps[step] && errors.As(err, &te) && te.Code >= 500 && te.Code < 600 {
		return Permanent(err)
	}
	return err
}

// compose builds the RFC 5322 message: UTF-8 plain text, quoted-printable, CRLF line ends.
func (s *SMTPSender) compose(n Notification, to *mail.Address) []byte {
	subject, body := EmailText(n, s.cfg.Location)
	var b bytes.Buffer
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", s.from.String())
	h("To", to.String())
	h("Subject", mime.QEncoding.Encode("utf-8", subject))
	h("Date", s.cfg.Now().Format(time.RFC1123Z))
	h("Message-ID", "<"+n.ID+"@handoff>")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	h(EventIDHeader, n.ID)
	h(EventTypeHeader, n.Kind)
	h(OrderVersionHeader, strconv.FormatInt(n.Order.GetVersion(), 10))
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(body, "\n", "\r\n")))
	_ = qp.Close()
	return b.Bytes()
}

// EmailText renders the subject and plain-text body (LF line ends) of n, with times on the
// store's clock (hours.Location), or in loc for an order that does not name its store's zone.
func EmailText(n Notification, loc *time.Location) (subject, body string) {
	o := n.Order
	loc = hours.Location(o.GetStoreTimeZone(), loc)
	var headline string
	switch n.Kind {
	case KindConfirmed:
		subject, headline = "is confirmed", "Your order is confirmed. We will tell you when it is ready."
	case KindRejected:
		subject, headline = "could not be placed", "Sorry, we could not take your order"+because(o.GetReason())+". Nothing has been charged."
	case KindPreparing:
		subject, headline = "is being prepared", "The store has started preparing your order."
	case KindReady:
		subject, headline = "is ready for pickup", "Your order is ready for pickup."
	case KindLineUnavailable:
		subject, headline = "has changed", "The store cannot supply part of your order. It has been removed, and you will not be charged for it."
	case KindCancelled:
		subject, headline = "has been cancelled", "Your order has been cancelled"+because(o.GetReason())+"."
	case KindExpiringSoon:
		subject, headline = "is waiting for you", "Your order is waiting for you. Please collect it soon, or it will be released."
	case KindExpired:
		subject, headline = "was not collected", "Your order was not collected in time and has been released."
		if !o.GetPickupDeadline().IsValid() { // it never became ready: the store's doing
			subject, headline = "could not be made ready", "Sorry, the store could not get your order ready in time. It has been cancelled, and you will not be charged."
		}
	case KindCollected:
		subject, headline = "has been collected", "Thank you for collecting your order."
	default:
		subject, headline = "was updated", "Your order was updated ("+n.Kind+")."
	}
	subject = "Your order " + o.GetId() + " " + subject

	var b strings.Builder
	name := o.GetPickupName()
	if name == "" {
		name = "there"
	}
	fmt.Fprintf(&b, "Hello %s,\n\n%s\n\n", name, headline)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-13s%s\n", k+":", v)
		}
	}
	row("Order", o.GetId())
	store := o.GetStoreName()
	if store == "" {
		store = o.GetStoreId()
	}
	row("Store", store)
	row("State", stateName(o.GetState()))
	if code := o.GetPickupCode(); code != "" {
		row("Pickup code", code+" (show it at the counter)")
	}
	if t := o.GetReadyByTime(); t != nil && (n.Kind == KindConfirmed || n.Kind == KindPreparing) {
		row("Ready by", t.AsTime().In(loc).Format("Mon 2 Jan 15:04 MST"))
	}
	if t := o.GetPickupDeadline(); t != nil && (n.Kind == KindReady || n.Kind == KindExpiringSoon || n.Kind == KindLineUnavailable) {
		row("Collect by", t.AsTime().In(loc).Format("Mon 2 Jan 15:04 MST"))
	}
	if len(o.GetLines()) > 0 {
		b.WriteString("\nItems:\n")
		for _, l := range o.GetLines() {
			item := l.GetProductName()
			if v := l.GetVariantName(); v != "" {
				item += " (" + v + ")"
			}
			line := fmt.Sprintf("  %d x %s  %s", l.GetQuantity(), item, formatMoney(l.GetLineTotal()))
			if l.GetState() == fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE {
				line = fmt.Sprintf("  %d x %s  removed%s", l.GetQuantity(), item, because(l.GetUnavailableReason()))
			}
			b.WriteString(line + "\n")
		}
		row("Total", formatMoney(o.GetTotal()))
	}
	if len(o.GetShortages()) > 0 {
		b.WriteString("\nNot enough stock nearby for:\n")
		for _, sh := range o.GetShortages() {
			fmt.Fprintf(&b, "  %s: asked for %d, %d available\n", sh.GetSku(), sh.GetRequested(), sh.GetAvailable())
		}
	}
	b.WriteString("\nThis message was sent by Handoff about your order; no need to reply.\n")
	return subject, b.String()
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

func stateName(s fulfilmentv1.OrderState) string {
	name := strings.TrimPrefix(s.String(), "ORDER_STATE_")
	if name == "" || name == "UNSPECIFIED" {
		return ""
	}
	return name[:1] + strings.ToLower(name[1:])
}

// formatMoney shows integer minor units as "12.50 USD", in the currency's own minor unit.
func formatMoney(m *commonv1.Money) string {
	if m == nil {
		return ""
	}
	return money.Format(m.GetAmountMinor(), m.GetCurrencyCode())
}
