package fulfilment

import "context"

// QueueAhead is queueAhead as a checkout calls it (the shared read on the pool), for tests.
func (s *Service) QueueAhead(ctx context.Context, storeID string) (int, error) {
	return s.queueAhead(ctx, nil, storeID)
}
