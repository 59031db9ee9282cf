package notify_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// With TLS required, an email (it carries the pickup code) is not sent to a server that does not
// offer STARTTLS, or across a network that strips it: it is kept to be retried, not sent in the
// clear. By default it goes, encrypted where the server offers it. A mode that is none of the
// three is refused.
func TestRequiredSMTPTLSSendsNothingInTheClear(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t) // offers no STARTTLS
	senders, err := notify.Config{SMTPAddr: mta.addr(), SMTPFrom: "orders@handoff.test", SMTPTLS: notify.SMTPRequire}.Senders()
	if err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, pool, fastConfig(senders...))
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-tls"), Email: "ada@example.com"})
	id := notificationIDs(t, pool, "ord-tls", notify.ChannelEmail)[0]
	time.Sleep(time.Second) // several attempts (backoff 40-400 ms)
	if n := len(mta.received()); n != 0 {
		t.Fatalf("with TLS required, %d emails were sent to a server without STARTTLS", n)
	}
	var state, lastError string
	if err := pool.QueryRow(t.Context(), `SELECT state, last_error FROM notifications WHERE id = $1`, id).Scan(&state, &lastError); err != nil {
		t.Fatal(err)
	}
	if state == "sent" || !strings.Contains(lastError, "STARTTLS") {
		t.Fatalf("the email is %s (%q); want it unsent, saying STARTTLS is missing", state, lastError)
	}

	plain, err := notify.Config{SMTPAddr: mta.addr(), SMTPFrom: "orders@handoff.test"}.Senders()
	if err != nil {
		t.Fatal(err)
	}
	pool2 := newPool(t)
	startDispatcher(t, pool2, fastConfig(plain...))
	enqueue(t, pool2, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-plain"), Email: "ada@example.com"})
	waitForState(t, pool2, notificationIDs(t, pool2, "ord-plain", notify.ChannelEmail)[0], "sent")

	if _, err := (notify.Config{SMTPAddr: mta.addr(), SMTPFrom: "orders@handoff.test", SMTPTLS: "always"}).Senders(); err == nil {
		t.Fatal(`SMTP TLS "always" accepted; want it refused`)
	}
}

// With implicit TLS (port 465) the conversation is encrypted from its first byte: the email
// reaches a server that speaks only TLS.
func TestImplicitSMTPTLSSendsOverTLSFromTheFirstByte(t *testing.T) {
	tlsSrv := httptest.NewUnstartedServer(nil) // for its certificate, trusted by its client
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsSrv.TLS)
	if err != nil {
		t.Fatal(err)
	}
	mta := serveSMTP(t, ln)
	roots := tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	sender, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: mta.addr(), From: "orders@handoff.test", ImplicitTLS: true,
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "example.com"}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t)
	startDispatcher(t, pool, fastConfig(sender))
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-465"), Email: "ada@example.com"})
	waitForState(t, pool, notificationIDs(t, pool, "ord-465", notify.ChannelEmail)[0], "sent")
	if n := len(mta.received()); n != 1 {
		t.Fatalf("the TLS-only server received %d emails; want 1", n)
	}
}
