package notify_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// hangingWebhook reads each request and never answers, until the test ends or the sender
// gives up. It counts the requests it holds.
func hangingWebhook(t *testing.T) (url string, held *atomic.Int64) {
	t.Helper()
	held = &atomic.Int64{}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL, held
}

// hangingSMTP accepts connections and never greets, until the test ends. It counts the
// connections it holds.
func hangingSMTP(t *testing.T) (addr string, held *atomic.Int64) {
	t.Helper()
	held = &atomic.Int64{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), held
}

// A receiver that hangs holds back only its own channel: with every send slot of the webhook
// taken by requests that are never answered and more webhooks due behind them, a shopper's
// email goes out at once, not after the webhook's timeouts; and the same the other way round
// with a mail server that never greets. (The reviewer's scenario: before, both channels shared
// one pool of slots, claimed oldest first, and the email went out 4 s after it was written.)
func TestAHangingReceiverDoesNotHoldBackTheOtherChannel(t *testing.T) {
	const concurrency, queued = 4, 8
	webhookOnly := notify.Channels{notify.ChannelWebhook: true}
	emailOnly := notify.Channels{notify.ChannelEmail: true}

	t.Run("webhook hangs", func(t *testing.T) {
		pool := newPool(t)
		counted, statements := countedPool(t, pool)
		hookURL, held := hangingWebhook(t)
		mail := newSMTPServer(t)
		cfg := fastConfig(webhookSender(t, hookURL), smtpSender(t, mail.addr())) // timeouts 2s
		cfg.Concurrency = concurrency
		cfg.PollInterval = 200 * time.Millisecond
		startDispatcher(t, counted, cfg)

		for i := range queued {
			enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-hook-%d", i)), Channels: webhookOnly})
		}
		waitHeld(t, held, concurrency)
		start := time.Now()
		enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-mail"), Email: "ada@example.com", Channels: emailOnly})
		testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if len(mail.received()) == 0 {
				return fmt.Errorf("the email has not arrived")
			}
			return nil
		})
		checkPrompt(t, "the email", time.Since(start))

		// The webhooks still due wait for a slot of their own channel to come free, not for
		// rounds run back to back (every RoundInterval) while the hung sends hold them all.
		statements.n.Store(0)
		time.Sleep(600 * time.Millisecond) // before the hung sends' 2s timeout
		if n := statements.n.Load(); n > 12 {
			t.Fatalf("%d statements in 600ms while every webhook slot was held; want a round per PollInterval (200ms)", n)
		}
	})

	t.Run("mail server hangs", func(t *testing.T) {
		pool := newPool(t)
		rcv := newWebhookReceiver(t, secret)
		mailAddr, held := hangingSMTP(t)
		cfg := fastConfig(webhookSender(t, rcv.srv.URL), smtpSender(t, mailAddr)) // timeouts 2s
		cfg.Concurrency = concurrency
		startDispatcher(t, pool, cfg)

		for i := range queued {
			enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-mail-%d", i)), Email: "ada@example.com", Channels: emailOnly})
		}
		waitHeld(t, held, concurrency)
		start := time.Now()
		enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-hook"), Channels: webhookOnly})
		id := notificationIDs(t, pool, "ord-hook", notify.ChannelWebhook)[0]
		testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if _, delivered, _ := rcv.snapshot(); delivered[id] == 0 {
				return fmt.Errorf("the webhook has not arrived")
			}
			return nil
		})
		checkPrompt(t, "the webhook", time.Since(start))
	})
}

// waitHeld waits until a hanging receiver holds n sends, every slot of its channel.
func waitHeld(t *testing.T, held *atomic.Int64, n int64) {
	t.Helper()
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if h := held.Load(); h < n {
			return fmt.Errorf("the hanging receiver holds %d sends, want %d", h, n)
		}
		return nil
	})
}

// checkPrompt fails unless d, from commit to arrival, is well under the senders' 2 s timeout.
func checkPrompt(t *testing.T, what string, d time.Duration) {
	t.Helper()
	t.Logf("%s arrived %v after its commit", what, d)
	if d > 500*time.Millisecond {
		t.Fatalf("%s arrived %v after its commit while the other channel's receiver hung; want well under its 2s timeout", what, d)
	}
}

// A shop in Kuwait prices in KWD, whose minor unit is the fils (1 KWD = 1000 fils, ISO 4217
// exponent 3). An order of 1.500 KWD (1500 fils) is shown as such in the shopper's email; it
// was shown as 15.00 KWD, ten times the price.
func TestAnEmailShowsAmountsInTheCurrencysOwnMinorUnit(t *testing.T) {
	pool := newPool(t)
	mailSrv := newSMTPServer(t)
	cfg := fastConfig(smtpSender(t, mailSrv.addr()))
	cfg.PickupCode = func(string) string { return "4821" }
	startDispatcher(t, pool, cfg)

	kwd := func(minor int64) *commonv1.Money { return &commonv1.Money{AmountMinor: minor, CurrencyCode: "KWD"} }
	o := readyOrder("ord-kwd")
	o.Lines[0].Quantity, o.Lines[0].UnitPrice, o.Lines[0].LineTotal = 1, kwd(1500), kwd(1500)
	o.Total = kwd(1500)
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: o, Email: "ada@example.com"})
	ids := notificationIDs(t, pool, "ord-kwd", notify.ChannelEmail)
	waitForState(t, pool, ids[0], "sent")
	mails := mailSrv.received()
	if len(mails) != 1 {
		t.Fatalf("%d mails, want 1", len(mails))
	}
	body := parseMail(t, mails[0].Data).Body
	if !strings.Contains(body, "1.500 KWD") || strings.Contains(body, "15.00 KWD") {
		t.Fatalf("an order of 1500 fils (1.500 KWD) is shown as:\n%s", body)
	}
}

// A row of a channel no copy serves is skipped once it has waited, whatever its channel: one
// this build does not write (a newer build's that was rolled back, a row written by hand) too.
// Before, a round looked for unserved rows among the channels this build writes only, and such a
// row stayed pending for ever.
func TestARowOfAChannelThisBuildDoesNotKnowIsSkippedToo(t *testing.T) {
	pool := newPool(t)
	snap, err := proto.Marshal(readyOrder("ord-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{notify.ChannelEmail, "sms"} {
		if _, err := pool.Exec(t.Context(), `INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot, next_attempt_at, create_time, order_version)
			VALUES (gen_random_uuid(), 'ord-1', 'order.ready', $1, 'ada@example.com', $2, now() - interval '1 hour', now() - interval '1 hour', 4)`, ch, snap); err != nil {
			t.Fatal(err)
		}
	}
	startDispatcher(t, pool, fastConfig()) // no senders: nobody serves either channel
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		var email, sms int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE channel = 'email'), count(*) FILTER (WHERE channel = 'sms')
			FROM notifications WHERE state = 'pending'`).Scan(&email, &sms); err != nil {
			t.Fatal(err)
		}
		if email+sms != 0 {
			return fmt.Errorf("%d email and %d sms rows still pending, served by no copy, an hour old; want both skipped", email, sms)
		}
		return nil
	})
}
