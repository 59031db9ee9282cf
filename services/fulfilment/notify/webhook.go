package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/handoff-dev/handoff/internal/retryafter"
	"github.com/handoff-dev/handoff/internal/urlsecret"
)

// Webhook request headers.
const (
	// SignatureHeader is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
	SignatureHeader = "Handoff-Signature"
	// EventIDHeader is the notification id: the same on every retry and replay.
	EventIDHeader = "Handoff-Event-Id"
	// EventTypeHeader is the kind, e.g. order.ready.
	EventTypeHeader = "Handoff-Event-Type"
	// OrderVersionHeader is the order's version after the change. Deliveries are retried, so
	// they can arrive out of order: a receiver keeps, per order, the notification with the
	// highest version. Not signed: a webhook receiver that must trust it reads the signed
	// body's order.version; this is for routing without parsing the body.
	OrderVersionHeader = "Handoff-Order-Version"
)

// WebhookConfig configures a WebhookSender.
type WebhookConfig struct {
	// URL receives a POST per notification; http or https.
	URL string
	// Secret is the shared key the body is signed with (at least 16 bytes).
	Secret string
	// Timeout bounds one request, connection included. Default 10s.
	Timeout time.Duration
	// Client is the HTTP client; nil means a fresh one. Redirects are never followed: a
	// webhook answering 3xx is retried, then dead-lettered, for an operator to fix the URL.
	Client *http.Client
	// Now is the clock the signature's timestamp comes from; nil means time.Now.
	Now func() time.Time
}

// WebhookSender posts notifications as signed JSON to one URL.
//
// The body is
//
//	{"id": "<notification id>", "type": "order.ready", "create_time": "<RFC 3339>", "order": {<handoff.fulfilment.v1.Order in proto3 JSON, no pickup code, no history>}}
//
// with headers Handoff-Event-Id, Handoff-Event-Type and Handoff-Signature (see [Sign]). A 2xx
// answer is delivered; 408, 429, 503 (Retry-After honoured), 401, 403, 404 (the receiver's
// configuration: a secret being rotated, a route not deployed yet), 3xx, 5xx and network
// errors are retried; any other 4xx is permanent.
//
// The URL may carry secrets (a password, a token in the path as Slack's do, or in the query
// string), and Send's errors are logged, stored as the notification's last_error and listed to
// operators: they name the receiver as scheme://host only, and the URL's secrets are cut out of
// what the receiver answered.
type WebhookSender struct {
	url     string
	origin  string   // scheme://host of url: how errors name the receiver
	hide    []string // the URL's secrets, longest first, as they may appear in an error
	secret  []byte
	timeout time.Duration
	client  *http.Client
	now     func() time.Time
}

// NewWebhookSender checks cfg and returns the sender.
func NewWebhookSender(cfg WebhookConfig) (*WebhookSender, error) {
	// Neither error repeats the URL: it may carry secrets, and this one is logged at start.
	u, err := url.Parse(cfg.URL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("notify: webhook URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("notify: webhook URL must be an absolute http(s) URL")
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("notify: webhook secret must be at least 16 bytes")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	client := &http.Client{}
	if cfg.Client != nil {
		c := *cfg.Client // our redirect policy must not change the caller's client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &WebhookSender{
		url: cfg.URL, origin: urlsecret.Origin(u), hide: urlsecret.Parts(cfg.URL, u),
		secret: []byte(cfg.Secret), timeout: cfg.Timeout, client: client, now: cfg.Now,
	}, nil
}

// snippetLen is how much of a receiver's answer an error quotes.
const snippetLen = 256

// redact cuts the URL's secrets out of s.
func (w *WebhookSender) redact(s string) string { return urlsecret.Redacted(s, w.hide) }

// webhookError is a failed send as it is logged and stored: its text names the receiver by
// scheme://host and leaves the URL's secrets out. It unwraps to the cause (a network error,
// the deadline), never to the url.Error that names the whole URL.
type webhookError struct {
	msg   string
	cause error
}

func (e *webhookError) Error() string { return e.msg }
func (e *webhookError) Unwrap() error { return e.cause }

// fail returns the error "webhook <what> <origin>: <cause>" without the URL's secrets.
func (w *WebhookSender) fail(what string, cause error) error {
	var uerr *url.Error
	if errors.As(cause, &uerr) {
		cause = uerr.Err // its text is the whole URL (password hidden) and then this
	}
	return &webhookError{msg: "webhook " + what + " " + w.origin + ": " + w.redact(cause.Error()), cause: cause}
}

// Channel is "webhook".
func (*WebhookSender) Channel() string { return ChannelWebhook }

// Send posts n.
func (w *WebhookSender) Send(ctx context.Context, n Notification) error {
	body, err := WebhookBody(n)
	if err != nil {
		return Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Permanent(w.fail("request", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Handoff-Notify/1")
	req.Header.Set(EventIDHeader, n.ID)
	req.Header.Set(EventTypeHeader, n.Kind)
	req.Header.Set(OrderVersionHeader, strconv.FormatInt(n.Order.GetVersion(), 10))
	req.Header.Set(SignatureHeader, Sign(w.secret, w.now(), body))
	res, err := w.client.Do(req)
	if err != nil {
		return w.fail("POST", err)
	}
	defer res.Body.Close()
	// Read a little for the error message, the URL's secrets cut out, and drain so the
	// connection can be reused.
	snippet := urlsecret.Snippet(res.Body, snippetLen, w.hide)
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))

	code := res.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = &webhookError{msg: fmt.Sprintf("webhook POST %s answered %s: %s", w.origin, res.Status, snippet)}
	switch {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, _ := retryafter.Parse(res.Header, w.now(), maxRetryAfter); d > 0 {
			return RetryAfter(err, d)
		}
		return err
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound:
		// About the receiver's setup, not this notification: every notification would be
		// refused alike until it is fixed, so retry (MaxAttempts bounds it).
		return err
	case code >= 400 && code < 500:
		return Permanent(err)
	default:
		return err
	}
}

// WebhookBody is the JSON body posted for n.
func WebhookBody(n Notification) ([]byte, error) {
	order, err := protojson.Marshal(n.Order)
	if err != nil {
		return nil, fmt.Errorf("encode order %s: %w", n.Order.GetId(), err)
	}
	return json.Marshal(struct {
		ID         string          `json:"id"`
		Type       string          `json:"type"`
		CreateTime string          `json:"create_time"`
		Order      json.RawMessage `json:"order"`
	}{n.ID, n.Kind, n.CreateTime.UTC().Format(time.RFC3339Nano), order})
}

// Sign returns the Handoff-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>.<body>")>". Signing the time
// with the body lets receivers refuse replays of old requests.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature checks a Handoff-Signature header against body, as a receiver should: the
// HMAC must match (compared in constant time) and the timestamp must be within tolerance of
// now. Several v1 entries are allowed (for secret rotation); one match is enough.
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("signature has no valid t= timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("signature timestamp is %s away from now, beyond %s", d.Round(time.Second), tolerance)
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return errors.New("signature does not match the body")
}

// maxRetryAfter caps the wait a receiver's Retry-After asks for: longer than any backoff the
// dispatcher keeps to, which caps it again (MaxBackoff).
const maxRetryAfter = 24 * time.Hour
