package notify_test

import (
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
