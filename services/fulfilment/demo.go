package fulfilment

import (
	"context"

	"github.com/handoff-dev/handoff/internal/demo"
)

// LoadDemo loads nothing: the demo chain has no orders; shoppers make them.
func (s *Service) LoadDemo(context.Context, demo.Chain) (bool, error) { return false, nil }

// OwnData reports false: orders, the demo's or not, are no reason to leave the demo out.
func (s *Service) OwnData(context.Context, demo.Chain) (bool, error) { return false, nil }
