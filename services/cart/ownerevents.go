package cart

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/streams"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/services/catalog"
	"github.com/handoff-dev/handoff/services/inventory"
)

// productEvents are every product event of the catalog (services/catalog/products.go: created,
// updated, archived): a subscription filter, hence the wildcard. Store events are
// inventory.SubjectStoreEvents.
var productEvents = streams.EventSubject("catalog", "product", "*")

// watchOwners keeps the caches honest: a product's variants are dropped when the catalog
// publishes a change to it, a store when inventory does, and everything when the NATS
// connection drops or comes back (events sent meanwhile were missed).
//
// Plain core-NATS subscriptions, not JetStream consumers: every copy of the cart must hear every
// event for its own cache, nothing needs to survive a restart (the cache does not), and the TTL
// covers an event missed in a way the connection status does not show. If the subscriptions
// cannot be made, the caches are switched off rather than trusted blind.
func (s *Service) watchOwners() error {
	products, err := s.nc.Subscribe(productEvents, s.onProductEvent)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", productEvents, err)
	}
	stores, err := s.nc.Subscribe(inventory.SubjectStoreEvents, s.onStoreEvent)
	if err != nil {
		_ = products.Unsubscribe()
		return fmt.Errorf("subscribe to %s: %w", inventory.SubjectStoreEvents, err)
	}
	// A status listener, not the connection's reconnect/disconnect handlers: those are the
	// owner's (the stack logs with them) and there is only one of each.
	status := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	var once sync.Once
	s.stopWatching = func() {
		once.Do(func() {
			_ = products.Unsubscribe()
			_ = stores.Unsubscribe()
			s.nc.RemoveStatusListener(status) // closes it: the loop below ends
		})
	}
	go func() {
		for st := range status {
			s.variantCache.clear()
			s.storeCache.clear()
			if st == nats.CLOSED {
				s.stopWatching()
				continue
			}
			if st == nats.CONNECTED {
				s.log.Info("NATS reconnected; catalog and store caches cleared, events sent meanwhile were missed")
			}
		}
	}()
	// The server knows the subscriptions before the cart answers anything, so no event about an
	// answer it caches can slip by.
	if err := s.nc.FlushTimeout(s.lookupTimeout); err != nil {
		s.log.Warn("NATS flush after subscribing to catalog and store events failed; relying on the cache TTL until it is through", "err", err)
	}
	return nil
}

// onProductEvent drops the product's variants: those it names now and any cached under its id
// (an update may have removed a variant).
func (s *Service) onProductEvent(m *nats.Msg) {
	var p *catalogv1.Product
	var err error
	switch m.Subject {
	case catalog.SubjectProductCreated:
		var ev catalogv1.ProductCreated
		err = proto.Unmarshal(m.Data, &ev)
		p = ev.GetProduct()
	case catalog.SubjectProductUpdated:
		var ev catalogv1.ProductUpdated
		err = proto.Unmarshal(m.Data, &ev)
		p = ev.GetProduct()
	case catalog.SubjectProductArchived:
		var ev catalogv1.ProductArchived
		err = proto.Unmarshal(m.Data, &ev)
		p = ev.GetProduct()
	}
	if err != nil || p.GetId() == "" {
		// A product event we cannot read (or a new kind): forget every variant to be safe.
		s.log.Warn("unreadable catalog product event; all cached variants dropped", "subject", m.Subject, "err", err)
		s.variantCache.clear()
		return
	}
	skus := make([]string, 0, len(p.GetVariants()))
	for _, v := range p.GetVariants() {
		skus = append(skus, v.GetSku())
	}
	id := p.GetId()
	s.variantCache.drop(skus, func(v *catalogv1.Variant) bool { return v.GetProductId() == id })
	s.log.Debug("catalog product changed; its cached variants dropped", "product_id", id, "subject", m.Subject)
}

// onStoreEvent drops the store.
func (s *Service) onStoreEvent(m *nats.Msg) {
	id, err := inventory.StoreOfEvent(m.Subject, m.Data)
	if err != nil || id == "" {
		s.log.Warn("unreadable inventory store event; all cached stores dropped", "subject", m.Subject, "err", err)
		s.storeCache.clear()
		return
	}
	s.storeCache.drop([]string{id}, nil)
	s.log.Debug("store changed; its cached copy dropped", "store_id", id, "subject", m.Subject)
}
