package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// A secret rotated with a grace (previous_secret_ttl) leaves no gap: while the grace runs,
// deliveries carry a signature the vendor can check with either secret, and the vendor's
// events signed with either are taken; once it is over, the old secret is refused. A rotation
// without a grace (a leaked secret) cuts the old one off at once, ending a grace still running.
func TestASecretRotatedWithAGraceIsTakenBesideTheNewOneUntilItEnds(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) {
		fastWebhooks(c)
		c.WebhookGiveUpAfter = 10 * time.Second
	}))
	s.addStore(t, "rot-1", map[string]int32{"LATTE-16": 50})
	vendor, url := newVendorPOS(t)
	set := func(rotate bool, ttl *durationpb.Duration) *posv1.SetStoreWebhookResponse {
		t.Helper()
		res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: "rot-1", Url: url, Enabled: true}, RotateSecret: rotate, PreviousSecretTtl: ttl}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	old := set(false, nil).GetSigningSecret()

	rotated := set(true, durationpb.New(time.Hour))
	fresh := rotated.GetSigningSecret()
	if fresh == "" || fresh == old {
		t.Fatalf("rotation with a grace gave secret %q; want a new one", fresh)
	}
	if at := rotated.GetPreviousSecretExpireTime().AsTime(); at.Before(time.Now().Add(59*time.Minute)) || at.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("previous secret valid until %v; want about an hour from now", at)
	}
	// A change that does not rotate keeps the grace.
	if kept := set(false, nil); kept.GetPreviousSecretExpireTime() == nil {
		t.Fatal("setting the webhook again without rotating ended the grace")
	}

	// Deliveries: a vendor still on the old secret and one already on the new both verify them.
	now := time.Now()
	for i, secret := range []string{old, fresh} {
		vendor.setSecret(secret)
		o := order("rot-1", i+1)
		e.publish("confirmed", o, nil)
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if n := len(vendor.deliveredKinds()); n < i+1 {
				return fmt.Errorf("%d of %d tickets delivered", n, i+1)
			}
			return nil
		})
	}
	vendor.mu.Lock()
	bad := vendor.badSigs
	vendor.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d deliveries refused by the vendor's signature check during the grace", bad)
	}
	// Events: either secret is taken.
	if code, out := e.vendorPost("rot-1", old, now, vendorEvent("r-1", "sale", "LATTE-16", 1), nil); code != http.StatusOK {
		t.Fatalf("event signed with the old secret during the grace: HTTP %d %+v; want 200", code, out)
	}
	if code, out := e.vendorPost("rot-1", fresh, now, vendorEvent("r-2", "sale", "LATTE-16", 1), nil); code != http.StatusOK {
		t.Fatalf("event signed with the new secret: HTTP %d %+v; want 200", code, out)
	}

	// The grace over, the old secret is refused.
	if _, err := e.pool.Exec(context.Background(), `UPDATE store_webhooks SET previous_secret_expire_time = now() WHERE store_id = 'rot-1'`); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.vendorPost("rot-1", old, now, vendorEvent("r-3", "sale", "LATTE-16", 1), nil); code != http.StatusUnauthorized {
		t.Fatalf("event signed with the old secret after the grace: HTTP %d; want 401", code)
	}

	// Rotating again with a grace, then at once without one (the secret leaked): the one
	// replaced by the first rotation is cut off with it.
	second := set(true, durationpb.New(time.Hour)).GetSigningSecret()
	cut := set(true, nil)
	if cut.GetPreviousSecretExpireTime() != nil {
		t.Fatalf("rotation without a grace left the previous secret valid until %v", cut.GetPreviousSecretExpireTime().AsTime())
	}
	for name, secret := range map[string]string{"replaced with a grace, then cut": second, "first": old, "second": fresh} {
		if code, _ := e.vendorPost("rot-1", secret, now, vendorEvent("r-4-"+name, "sale", "LATTE-16", 1), nil); code != http.StatusUnauthorized {
			t.Fatalf("event signed with the %s secret after a rotation without a grace: HTTP %d; want 401", name, code)
		}
	}
	if code, _ := e.vendorPost("rot-1", cut.GetSigningSecret(), now, vendorEvent("r-5", "sale", "LATTE-16", 1), nil); code != http.StatusOK {
		t.Fatalf("event signed with the newest secret: HTTP %d; want 200", code)
	}
}

// A grace is refused, naming the field, when it is negative, longer than a week, or asked for
// without a rotation; nothing changes.
func TestABadSecretGraceIsRefusedNamingTheField(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "rot-2", map[string]int32{"LATTE-16": 5})
	first, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "rot-2", Url: "https://pos.vendor.example/handoff"}}))
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*posv1.SetStoreWebhookRequest{
		"negative":        {RotateSecret: true, PreviousSecretTtl: durationpb.New(-time.Second)},
		"over a week":     {RotateSecret: true, PreviousSecretTtl: durationpb.New(8 * 24 * time.Hour)},
		"without rotate":  {PreviousSecretTtl: durationpb.New(time.Hour)},
		"invalid seconds": {RotateSecret: true, PreviousSecretTtl: &durationpb.Duration{Seconds: 1, Nanos: -1}},
	} {
		r.Webhook = &posv1.StoreWebhook{StoreId: "rot-2", Url: "https://pos.vendor.example/handoff"}
		_, err := e.admin().SetStoreWebhook(context.Background(), req(r))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "previous_secret_ttl") {
			t.Errorf("%s: %v; want InvalidArgument naming previous_secret_ttl", name, err)
		}
	}
	if code, _ := e.vendorPost("rot-2", first.Msg.GetSigningSecret(), time.Now(), vendorEvent("b-1", "count", "LATTE-16", 5), nil); code == http.StatusUnauthorized {
		t.Fatal("the secret stopped working after refused changes")
	}
}
