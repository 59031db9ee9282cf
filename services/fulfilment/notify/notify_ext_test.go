package notify_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// writer enqueues the tests' notifications, as a fulfilment instance's does.
var writer notify.Writer

func TestMain(m *testing.M) { testenv.Main(m) }

const secret = "whsec_test_0123456789abcdef"

// notifyMigrations are this package's migrations: 00020 and up of the fulfilment folder (the
// orders' own migrations are not needed to test notifications).
func notifyMigrations(t *testing.T) fs.FS {
	t.Helper()
	dir := "../migrations"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil || v < 20 {
			continue
		}
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = &fstest.MapFile{Data: b}
	}
	return out
}

func newPool(t *testing.T) *pgxpool.Pool {
	return testenv.Pool(t, "", notifyMigrations(t))
}

// fastConfig retries within milliseconds so tests take well under a second.
func fastConfig(senders ...notify.Sender) notify.DispatcherConfig {
	return notify.DispatcherConfig{
		Senders:        senders,
		PollInterval:   50 * time.Millisecond,
		Concurrency:    4,
		MaxAttempts:    4,
		InitialBackoff: 40 * time.Millisecond,
		MaxBackoff:     400 * time.Millisecond,
		SendTimeout:    5 * time.Second,
		UnservedWait:   time.Microsecond,
	}
}

// startDispatcher runs a dispatcher until the test ends, logging to the test's log unless
// cfg has a logger.
func startDispatcher(t *testing.T, pool *pgxpool.Pool, cfg notify.DispatcherConfig) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(t)
	}
	d := notify.NewDispatcher(pool, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher Run: %v", err)
		}
	})
}

func webhookSender(t *testing.T, url string) *notify.WebhookSender {
	t.Helper()
	s, err := notify.NewWebhookSender(notify.WebhookConfig{URL: url, Secret: secret, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func smtpSender(t *testing.T, addr string) *notify.SMTPSender {
	t.Helper()
	s, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: addr, From: "Handoff Orders <orders@handoff.test>", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func usd(minor int64) *commonv1.Money {
	return &commonv1.Money{AmountMinor: minor, CurrencyCode: "USD"}
}

func readyOrder(id string) *fulfilmentv1.Order {
	return &fulfilmentv1.Order{
		Id: id, CustomerId: "cust-1", StoreId: "sea-capitol-hill", StoreName: "Capitol Hill Café",
		State: fulfilmentv1.OrderState_ORDER_STATE_READY, PickupCode: "4821", PickupName: "Ada",
		PickupDeadline: timestamppb.New(time.Date(2026, 3, 1, 18, 30, 0, 0, time.UTC)),
		Lines: []*fulfilmentv1.OrderLine{{
			LineId: "l1", Sku: "LATTE-L", ProductName: "Caffè Latte", VariantName: "Large", Quantity: 2,
			UnitPrice: usd(525), LineTotal: usd(1050), State: fulfilmentv1.OrderLineState_ORDER_LINE_STATE_ACTIVE,
		}},
		Total:   usd(1050),
		Version: 4,
		History: []*fulfilmentv1.Transition{{ToState: fulfilmentv1.OrderState_ORDER_STATE_READY}},
	}
}

// enqueue writes m in a committed transaction, as fulfilment does in its transitions.
func enqueue(t *testing.T, pool *pgxpool.Pool, m notify.Message) {
	t.Helper()
	if err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error { return writer.Enqueue(t.Context(), tx, m) }); err != nil {
		t.Fatalf("Enqueue %s for %s: %v", m.Kind, m.Order.GetId(), err)
	}
}

// notificationIDs returns the ids of order's notifications on channel.
func notificationIDs(t *testing.T, pool *pgxpool.Pool, orderID, channel string) []string {
	t.Helper()
	rows, _ := pool.Query(t.Context(), `SELECT id::text FROM notifications WHERE order_id = $1 AND channel = $2 ORDER BY create_time`, orderID, channel)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func stateOf(t *testing.T, pool *pgxpool.Pool, id string) (state string, attempts int) {
	t.Helper()
	if err := pool.QueryRow(t.Context(), `SELECT state, attempts FROM notifications WHERE id = $1`, id).Scan(&state, &attempts); err != nil {
		t.Fatalf("notification %s: %v", id, err)
	}
	return state, attempts
}

func waitForState(t *testing.T, pool *pgxpool.Pool, id, want string) {
	t.Helper()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got, attempts := stateOf(t, pool, id); got != want {
			return fmt.Errorf("notification %s is %s after %d attempts, want %s", id, got, attempts, want)
		}
		return nil
	})
}

// adminClient serves notify.Admin on a real gRPC server on a loopback port.
func adminClient(t *testing.T, pool *pgxpool.Pool) fulfilmentv1.FulfilmentAdminServiceClient {
	t.Helper()
	srv := grpc.NewServer()
	notify.NewAdmin(pool, testenv.Logger(t)).Register(srv)
	conn := testenv.GRPC(t, srv)
	return fulfilmentv1.NewFulfilmentAdminServiceClient(conn)
}

func TestWebhookReceivesSignedNotificationOnlyForCommittedTransitions(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	startDispatcher(t, pool, fastConfig(webhookSender(t, rcv.srv.URL)))

	// A transition that rolls back leaves no notification behind.
	rolledBack := errors.New("transition failed")
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		if err := writer.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-rolled-back")}); err != nil {
			return err
		}
		return rolledBack
	})
	if !errors.Is(err, rolledBack) {
		t.Fatalf("rolled-back transaction: %v", err)
	}
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-1"), Email: "ada@example.com"})

	ids := notificationIDs(t, pool, "ord-1", notify.ChannelWebhook)
	if len(ids) != 1 {
		t.Fatalf("webhook notifications for ord-1: %v, want one", ids)
	}
	waitForState(t, pool, ids[0], "sent")
	requests, delivered, problems := rcv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("receiver refused requests: %v", problems)
	}
	if delivered[ids[0]] != 1 || len(requests) != 1 {
		t.Fatalf("receiver got %v, want exactly one request for %s", requests, ids[0])
	}
	if n := len(notificationIDs(t, pool, "ord-rolled-back", notify.ChannelWebhook)); n != 0 {
		t.Fatalf("rolled-back transition left %d notifications", n)
	}

	body := rcv.body(ids[0])
	order, _ := body["order"].(map[string]any)
	if body["id"] != ids[0] || body["type"] != "order.ready" || order["id"] != "ord-1" || order["storeName"] != "Capitol Hill Café" {
		t.Fatalf("webhook body = %v; want id, type order.ready and the order", body)
	}
	if _, hasCode := order["pickupCode"]; hasCode {
		t.Fatalf("webhook body carries the pickup code: %v", order)
	}
	// Deliveries can arrive out of order: the order's version says which is newest.
	if v := rcv.orderVersion(ids[0]); v != "4" || order["version"] != "4" {
		t.Fatalf("order version header %q, body %v; want 4 in both", v, order["version"])
	}
	if _, hasHistory := order["history"]; hasHistory {
		t.Fatalf("webhook body carries the order history: %v", order)
	}
}

func TestFailingWebhookIsRetriedWithGrowingBackoffUntilItAnswers2xx(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	// 503, then 429 and 408 (both temporary by definition), then success.
	rcv.setAnswer(func(_ string, attempt int) int {
		return []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusRequestTimeout, http.StatusOK}[min(attempt, 4)-1]
	})
	cfg := fastConfig(webhookSender(t, rcv.srv.URL))
	cfg.MaxAttempts = 5
	startDispatcher(t, pool, cfg)

	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: readyOrder("ord-retry")})
	id := notificationIDs(t, pool, "ord-retry", notify.ChannelWebhook)[0]
	waitForState(t, pool, id, "sent")

	requests, delivered, _ := rcv.snapshot()
	times := requests[id]
	if len(times) != 4 || delivered[id] != 1 {
		t.Fatalf("receiver saw %d requests, %d delivered; want 4 requests and one delivery", len(times), delivered[id])
	}
	// Backoff with equal jitter: the k-th wait is between 40ms·2^(k-1)/2 and 40ms·2^(k-1), so
	// each wait is at least the previous one's minimum doubled.
	var gaps []time.Duration
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	for k, g := range gaps {
		if minWait := (40 * time.Millisecond << k) / 2; g < minWait {
			t.Fatalf("wait before attempt %d was %v, want at least %v (gaps %v)", k+2, g, minWait, gaps)
		}
	}
	if gaps[2] <= gaps[0] {
		t.Fatalf("backoff did not grow: gaps %v", gaps)
	}
	if _, attempts := stateOf(t, pool, id); attempts != 4 {
		t.Fatalf("attempts recorded = %d, want 4", attempts)
	}
}

func TestWebhookClientErrorIsDeadLetteredAtOnceAndReplayDeliversIt(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	var mu sync.Mutex
	broken := true
	rcv.setAnswer(func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	startDispatcher(t, pool, fastConfig(webhookSender(t, rcv.srv.URL)))
	admin := adminClient(t, pool)

	enqueue(t, pool, notify.Message{Kind: notify.KindCancelled, Order: readyOrder("ord-400")})
	id := notificationIDs(t, pool, "ord-400", notify.ChannelWebhook)[0]
	waitForState(t, pool, id, "dead")
	if _, attempts := stateOf(t, pool, id); attempts != 1 {
		t.Fatalf("a 400 answer was tried %d times, want 1 (permanent)", attempts)
	}

	list, err := admin.ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetNotifications()) != 1 {
		t.Fatalf("dead letters = %v, want the one notification", list.GetNotifications())
	}
	dead := list.GetNotifications()[0]
	if dead.GetId() != id || dead.GetOrderId() != "ord-400" || dead.GetChannel() != "webhook" || dead.GetKind() != "order.cancelled" ||
		dead.GetAttempts() != 1 || !strings.Contains(dead.GetLastError(), "400") || dead.GetFailTime() == nil {
		t.Fatalf("dead letter = %v; want id, order, channel, kind, 1 attempt, the 400 and a fail time", dead)
	}

	mu.Lock()
	broken = false
	mu.Unlock()
	if _, err := admin.ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: id}); err != nil {
		t.Fatalf("ReplayNotification: %v", err)
	}
	waitForState(t, pool, id, "sent")
	if _, delivered, _ := rcv.snapshot(); delivered[id] != 1 {
		t.Fatalf("after replay the receiver has %d deliveries of %s, want 1", delivered[id], id)
	}
	list, err = admin.ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{})
	if err != nil || len(list.GetNotifications()) != 0 {
		t.Fatalf("dead letters after replay = %v, %v; want none", list.GetNotifications(), err)
	}
}

func TestNotificationThatExhaustsItsAttemptsIsDeadLetteredWithItsLastError(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	rcv.setAnswer(func(string, int) int { return http.StatusBadGateway })
	cfg := fastConfig(webhookSender(t, rcv.srv.URL))
	cfg.MaxAttempts = 3
	startDispatcher(t, pool, cfg)

	enqueue(t, pool, notify.Message{Kind: notify.KindExpiringSoon, Order: readyOrder("ord-502")})
	id := notificationIDs(t, pool, "ord-502", notify.ChannelWebhook)[0]
	waitForState(t, pool, id, "dead")
	requests, _, _ := rcv.snapshot()
	if _, attempts := stateOf(t, pool, id); attempts != 3 || len(requests[id]) != 3 {
		t.Fatalf("attempts = %d, requests = %d; want 3 and 3", attempts, len(requests[id]))
	}
	list, err := adminClient(t, pool).ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{})
	if err != nil || len(list.GetNotifications()) != 1 || !strings.Contains(list.GetNotifications()[0].GetLastError(), "502") {
		t.Fatalf("dead letters = %v, %v; want one with the 502", list.GetNotifications(), err)
	}
}

func TestTwoDispatchersDeliverEachNotificationExactlyOnce(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	// Every notification fails once, so claims, retries and deliveries of both dispatchers
	// interleave.
	rcv.setAnswer(func(_ string, attempt int) int {
		time.Sleep(2 * time.Millisecond)
		if attempt == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	var sentBy [2]counter
	for i := range sentBy {
		startDispatcher(t, pool, fastConfig(countingSender{webhookSender(t, rcv.srv.URL), &sentBy[i]}))
	}

	const orders = 40
	for i := range orders {
		enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-%02d", i))})
	}
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var pending int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications WHERE state <> 'sent'`).Scan(&pending); err != nil {
			return err
		}
		if pending > 0 {
			return fmt.Errorf("%d notifications not yet sent", pending)
		}
		return nil
	})
	_, delivered, problems := rcv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("receiver refused requests: %v", problems)
	}
	if len(delivered) != orders {
		t.Fatalf("receiver has deliveries for %d notifications, want %d", len(delivered), orders)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Fatalf("notification %s delivered %d times, want once", id, n)
		}
	}
	t.Logf("sends by dispatcher: %d and %d", sentBy[0].get(), sentBy[1].get())
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type countingSender struct {
	notify.Sender
	n *counter
}

func (s countingSender) Send(ctx context.Context, n notify.Notification) error {
	s.n.inc()
	return s.Sender.Send(ctx, n)
}

func TestEmailReachesTheShopperWithOrderStoreStateAndPickupCode(t *testing.T) {
	pool := newPool(t)
	mailSrv := newSMTPServer(t)
	rcv := newWebhookReceiver(t, secret)
	cfg := fastConfig(webhookSender(t, rcv.srv.URL), smtpSender(t, mailSrv.addr()))
	cfg.PickupCode = func(orderID string) string { return map[string]string{"ord-mail": "4821"}[orderID] }
	startDispatcher(t, pool, cfg)

	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-mail"), Email: "Ada Lovelace <ada@example.com>"})
	// The code is derived at send time, never written to the notification outbox.
	rows, err := pool.Query(t.Context(), `SELECT order_snapshot FROM notifications WHERE order_id = 'ord-mail'`)
	if err != nil {
		t.Fatal(err)
	}
	for _, payload := range mustCollectBytes(t, rows) {
		var stored fulfilmentv1.Order
		if err := proto.Unmarshal(payload, &stored); err != nil || stored.GetPickupCode() != "" {
			t.Fatalf("notification outbox stores the pickup code in clear (%q, %v)", stored.GetPickupCode(), err)
		}
	}
	ids := notificationIDs(t, pool, "ord-mail", notify.ChannelEmail)
	if len(ids) != 1 {
		t.Fatalf("email notifications = %v, want one", ids)
	}
	waitForState(t, pool, ids[0], "sent")

	mails := mailSrv.received()
	if len(mails) != 1 {
		t.Fatalf("SMTP server received %d mails, want 1", len(mails))
	}
	m := mails[0]
	if m.From != "orders@handoff.test" || len(m.To) != 1 || m.To[0] != "ada@example.com" {
		t.Fatalf("envelope from %q to %v; want orders@handoff.test to ada@example.com", m.From, m.To)
	}
	p := parseMail(t, m.Data)
	if p.Subject != "Your order ord-mail is ready for pickup" {
		t.Errorf("subject = %q", p.Subject)
	}
	if got := p.Header.Get("Message-Id"); got != "<"+ids[0]+"@handoff>" {
		t.Errorf("Message-ID = %q, want the notification id", got)
	}
	if got := p.Header.Get("Handoff-Order-Version"); got != "4" {
		t.Errorf("Handoff-Order-Version = %q, want the order's version, 4", got)
	}
	for _, want := range []string{"Hello Ada", "ord-mail", "Capitol Hill Café", "State:       Ready", "Pickup code: 4821", "2 x Caffè Latte (Large)  10.50 USD", "Collect by:"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, p.Body)
		}
	}

	// The same transition's webhook went out too, without the code.
	webhook := notificationIDs(t, pool, "ord-mail", notify.ChannelWebhook)[0]
	waitForState(t, pool, webhook, "sent")
	if order, _ := rcv.body(webhook)["order"].(map[string]any); order["pickupCode"] != nil {
		t.Fatalf("webhook carries the pickup code")
	}
}

func TestEmailOfAFinishedOrderLeavesThePickupCodeOut(t *testing.T) {
	pool := newPool(t)
	mailSrv := newSMTPServer(t)
	startDispatcher(t, pool, fastConfig(smtpSender(t, mailSrv.addr())))

	o := readyOrder("ord-cancelled")
	o.State, o.Reason = fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, "store closing early"
	enqueue(t, pool, notify.Message{Kind: notify.KindCancelled, Order: o, Email: "ada@example.com"})
	waitForState(t, pool, notificationIDs(t, pool, "ord-cancelled", notify.ChannelEmail)[0], "sent")
	p := parseMail(t, mailSrv.received()[0].Data)
	if strings.Contains(p.Body, "4821") || !strings.Contains(p.Body, "cancelled: store closing early") {
		t.Fatalf("cancellation email should give the reason and no pickup code:\n%s", p.Body)
	}
}

// An order that expired READY was not collected; one that expired before it was ever ready
// was the store's failure, and the email does not blame the shopper.
func TestExpiryEmailSaysWhoseFailureItWas(t *testing.T) {
	uncollected := readyOrder("ord-uncollected")
	uncollected.State = fulfilmentv1.OrderState_ORDER_STATE_EXPIRED
	subject, body := notify.EmailText(notify.Notification{Kind: notify.KindExpired, Order: uncollected}, time.UTC)
	if !strings.Contains(subject, "not collected") || !strings.Contains(body, "not collected in time") {
		t.Errorf("an uncollected order's expiry: %q\n%s", subject, body)
	}
	neverReady := readyOrder("ord-never-ready")
	neverReady.State, neverReady.PickupDeadline = fulfilmentv1.OrderState_ORDER_STATE_EXPIRED, nil
	subject, body = notify.EmailText(notify.Notification{Kind: notify.KindExpired, Order: neverReady}, time.UTC)
	if strings.Contains(subject+body, "not collected") || !strings.Contains(body, "could not get your order ready") {
		t.Errorf("a never-ready order's expiry blames the shopper or says nothing: %q\n%s", subject, body)
	}
}

// An email gives times on the store's clock, where the shopper will be: the order names its
// store's zone. One that names none (kept from before orders had it) uses the configured zone.
func TestEmailTimesAreOnTheStoresClock(t *testing.T) {
	o := readyOrder("ord-la")
	o.PickupDeadline = timestamppb.New(time.Date(2026, 11, 24, 20, 49, 0, 0, time.UTC))
	o.StoreTimeZone = "America/Los_Angeles"
	_, body := notify.EmailText(notify.Notification{Kind: notify.KindReady, Order: o}, time.UTC)
	if !strings.Contains(body, "Tue 24 Nov 12:49 PST") {
		t.Errorf("a Los Angeles store's collect-by time, 20:49 UTC, is not given as 12:49 PST:\n%s", body)
	}
	o.StoreTimeZone = ""
	if _, body = notify.EmailText(notify.Notification{Kind: notify.KindReady, Order: o}, time.UTC); !strings.Contains(body, "Tue 24 Nov 20:49 UTC") {
		t.Errorf("an order naming no zone is not given in the configured one:\n%s", body)
	}
}

func TestSMTPTemporaryRejectionIsRetriedAndPermanentRejectionIsDeadLettered(t *testing.T) {
	pool := newPool(t)
	mailSrv := newSMTPServer(t)
	mailSrv.rcptReply = func(to string, attempt int) string {
		switch {
		case to == "nobody@example.com":
			return "550 5.1.1 no such mailbox"
		case attempt == 1:
			return "451 4.3.0 try again later"
		}
		return ""
	}
	startDispatcher(t, pool, fastConfig(smtpSender(t, mailSrv.addr())))

	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: readyOrder("ord-greylisted"), Email: "ada@example.com"})
	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: readyOrder("ord-bounced"), Email: "nobody@example.com"})
	greylisted := notificationIDs(t, pool, "ord-greylisted", notify.ChannelEmail)[0]
	bounced := notificationIDs(t, pool, "ord-bounced", notify.ChannelEmail)[0]

	waitForState(t, pool, greylisted, "sent")
	if _, attempts := stateOf(t, pool, greylisted); attempts != 2 {
		t.Fatalf("greylisted email took %d attempts, want 2", attempts)
	}
	waitForState(t, pool, bounced, "dead")
	if _, attempts := stateOf(t, pool, bounced); attempts != 1 {
		t.Fatalf("a 550 was tried %d times, want 1 (permanent)", attempts)
	}
	if n := len(mailSrv.received()); n != 1 {
		t.Fatalf("SMTP server received %d mails, want 1", n)
	}
}

func TestNotificationForAChannelWithoutSenderIsSkippedNotDeadLettered(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	startDispatcher(t, pool, fastConfig(webhookSender(t, rcv.srv.URL))) // no SMTP configured

	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-no-smtp"), Email: "ada@example.com"})
	waitForState(t, pool, notificationIDs(t, pool, "ord-no-smtp", notify.ChannelEmail)[0], "skipped")
	waitForState(t, pool, notificationIDs(t, pool, "ord-no-smtp", notify.ChannelWebhook)[0], "sent")
	list, err := adminClient(t, pool).ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{})
	if err != nil || len(list.GetNotifications()) != 0 {
		t.Fatalf("dead letters = %v, %v; want none", list.GetNotifications(), err)
	}
}

func TestEnqueueDecidesChannelsAndIsIdempotentPerTransition(t *testing.T) {
	pool := newPool(t)
	o := readyOrder("ord-twice")
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: o, Email: "ada@example.com"})
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: o, Email: "ada@example.com"}) // the same transition again
	enqueue(t, pool, notify.Message{Kind: notify.KindPreparing, Order: o, Email: "ada@example.com"})
	var got []string
	rows, _ := pool.Query(t.Context(), `SELECT kind || '/' || channel FROM notifications WHERE order_id = 'ord-twice' ORDER BY 1`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	// Preparing is webhook-only: the shopper gets no email for it.
	if want := "order.preparing/webhook,order.ready/email,order.ready/webhook"; strings.Join(got, ",") != want {
		t.Fatalf("rows = %v, want %s", got, want)
	}

	err = pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		return writer.Enqueue(t.Context(), tx, notify.Message{Kind: "ready", Order: o})
	})
	if err == nil || !strings.Contains(err.Error(), "order.<event>") {
		t.Fatalf("Enqueue with kind %q = %v; want an error naming the expected form", "ready", err)
	}
}

func TestAdminRefusesBadReplaysAndPagesDeadLetters(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	rcv.setAnswer(func(id string, _ int) int { return http.StatusGone })
	startDispatcher(t, pool, fastConfig(webhookSender(t, rcv.srv.URL)))
	admin := adminClient(t, pool)

	for i := range 5 {
		enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-gone-%d", i))})
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var dead int
		_ = pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications WHERE state = 'dead'`).Scan(&dead)
		if dead != 5 {
			return fmt.Errorf("%d dead letters, want 5", dead)
		}
		return nil
	})

	seen := map[string]bool{}
	token := ""
	for page := 0; ; page++ {
		res, err := admin.ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetNotifications()) > 2 {
			t.Fatalf("page %d has %d entries, want at most 2", page, len(res.GetNotifications()))
		}
		for _, n := range res.GetNotifications() {
			if seen[n.GetId()] {
				t.Fatalf("notification %s listed twice", n.GetId())
			}
			seen[n.GetId()] = true
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paging listed %d dead letters, want 5", len(seen))
	}

	_, err := admin.ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: "not-a-uuid"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "notification_id") {
		t.Errorf("replay of a malformed id = %v, want InvalidArgument naming notification_id", err)
	}
	_, err = admin.ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: "0190f3d2-0000-7000-8000-000000000000"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("replay of an unknown id = %v, want NotFound", err)
	}
	rcv.setAnswer(func(string, int) int { return http.StatusOK })
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-fine")})
	fine := notificationIDs(t, pool, "ord-fine", notify.ChannelWebhook)[0]
	waitForState(t, pool, fine, "sent")
	_, err = admin.ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: fine})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("replay of a delivered notification = %v, want FailedPrecondition", err)
	}
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"t":"2026-01-01T00:00:00Z","id":"not-a-uuid"}`))
	for _, token := range []string{"garbage!", forged} {
		_, err = admin.ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{PageToken: token})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("list with the token %q = %v, want InvalidArgument naming page_token", token, err)
		}
	}
}

func TestVerifySignatureRefusesTamperedBodyWrongSecretAndOldTimestamp(t *testing.T) {
	now := time.Unix(1_760_000_000, 0)
	body := []byte(`{"id":"n1"}`)
	header := notify.Sign([]byte(secret), now, body)
	if !strings.HasPrefix(header, "t=1760000000,v1=") {
		t.Fatalf("Sign = %q, want t=<unix>,v1=<hex>", header)
	}
	if err := notify.VerifySignature([]byte(secret), header, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	for name, err := range map[string]error{
		"tampered body": notify.VerifySignature([]byte(secret), header, []byte(`{"id":"n2"}`), now, 5*time.Minute),
		"wrong secret":  notify.VerifySignature([]byte("another-secret-0123456"), header, body, now, 5*time.Minute),
		"old timestamp": notify.VerifySignature([]byte(secret), header, body, now.Add(time.Hour), 5*time.Minute),
		"no timestamp":  notify.VerifySignature([]byte(secret), "v1=00", body, now, 5*time.Minute),
	} {
		if err == nil {
			t.Errorf("%s: signature accepted", name)
		}
	}
}

func TestSendersRefuseBadConfiguration(t *testing.T) {
	if _, err := notify.NewWebhookSender(notify.WebhookConfig{URL: "ftp://x", Secret: secret}); err == nil {
		t.Error("webhook with an ftp URL accepted")
	}
	if _, err := notify.NewWebhookSender(notify.WebhookConfig{URL: "https://x.example/hook", Secret: "short"}); err == nil {
		t.Error("webhook with a 5-byte secret accepted")
	}
	if _, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: "mail.example", From: "a@b.c"}); err == nil {
		t.Error("SMTP address without port accepted")
	}
	if _, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: "mail.example:587", From: "not an address"}); err == nil {
		t.Error("SMTP from that is not an address accepted")
	}
}

func mustCollectBytes(t *testing.T, rows pgx.Rows) [][]byte {
	t.Helper()
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// uuid.Parse takes "urn:uuid:…", which Postgres refuses: such an id is looked up as the UUID
// it names, and such a page token is refused naming page_token; neither fails as Internal.
func TestANotificationIDSpeltAsAURNIsLookedUpNotAnInternalError(t *testing.T) {
	pool := newPool(t)
	admin := adminClient(t, pool)
	id := "urn:uuid:" + uuid.NewString()
	_, err := admin.ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: id})
	if c := status.Code(err); c != codes.NotFound {
		t.Errorf("ReplayNotification(%q) = %v; want NotFound", id, err)
	}
	req := &fulfilmentv1.ListFailedNotificationsRequest{}
	req.PageToken = pagetoken.Encode(req, struct {
		FailTime time.Time `json:"t"`
		ID       string    `json:"id"`
	}{time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), id})
	_, err = admin.ListFailedNotifications(t.Context(), req)
	if c := status.Code(err); c != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
		t.Errorf("ListFailedNotifications with a urn:uuid token = %v; want InvalidArgument naming page_token", err)
	}
}
