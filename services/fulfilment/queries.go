package fulfilment

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// GetOrder returns one order with its history, if sc may see it; otherwise NotFound, whether
// or not it exists.
func (s *Service) GetOrder(ctx context.Context, sc scope, id string) (*order, error) {
	if id == "" {
		return nil, rpcerr.Invalid("order_id", "required")
	}
	o, err := readOrder(ctx, s.db, id, 0)
	if err != nil {
		return nil, err
	}
	if o == nil || !sc.allows(o) {
		return nil, rpcerr.NotFound("order", id)
	}
	return o, nil
}

// listPosition is the keyset position of order lists: the last order's create time and id.
type listPosition struct {
	Time int64  `json:"t"` // create_time, Unix microseconds
	ID   string `json:"i"`
}

// Check implements pagetoken.Checker: the query reads Time as a timestamptz.
func (p *listPosition) Check() error { return pagetoken.CheckUnixMicro(p.Time) }

func stateFilter(field string, states []fulfilmentv1.OrderState) ([]int16, error) {
	out := make([]int16, 0, len(states))
	for i, st := range states {
		if _, known := fulfilmentv1.OrderState_name[int32(st)]; !known || st == fulfilmentv1.OrderState_ORDER_STATE_UNSPECIFIED {
			return nil, rpcerr.Invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("not an order state: %d", st))
		}
		out = append(out, int16(st))
	}
	return out, nil
}

// ListOrders pages through a shopper's orders, newest first (histories left out: GetOrder has
// them).
func (s *Service) ListOrders(ctx context.Context, customerID string, req *fulfilmentv1.ListOrdersRequest) ([]*order, string, error) {
	size, err := pagetoken.PageSize(req.GetPageSize(), 20, 100)
	if err != nil {
		return nil, "", err
	}
	states, err := stateFilter("states", req.GetStates())
	if err != nil {
		return nil, "", err
	}
	var after listPosition
	hasAfter, err := pagetoken.Decode(req, &after)
	if err != nil {
		return nil, "", err
	}
	where, args := []string{"customer_id = $1"}, []any{customerID}
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if len(states) > 0 {
		where = append(where, "state = ANY("+arg(states)+")")
	}
	if hasAfter {
		where = append(where, "(create_time, id) < ("+arg(time.UnixMicro(after.Time).UTC())+", "+arg(after.ID)+")")
	}
	orders, err := queryOrders(ctx, s.db, `SELECT `+orderColumns+` FROM orders WHERE `+strings.Join(where, " AND ")+
		` ORDER BY create_time DESC, id DESC LIMIT `+arg(size+1), args...)
	if err != nil {
		return nil, "", err
	}
	return page(req, orders, size)
}

// openStatesSQL is the predicate of the index orders_open_by_store (migration 00011).
const openStatesSQL = "state IN (2, 3, 4)"

// onlyOpen reports whether every state asked for is an open one (CONFIRMED, PREPARING, READY).
func onlyOpen(states []int16) bool {
	for _, st := range states {
		if st != int16(domain.Confirmed) && st != int16(domain.Preparing) && st != int16(domain.Ready) {
			return false
		}
	}
	return true
}

// ListStoreOrders pages through a store's orders, oldest first; by default the open ones (its
// board).
func (s *Service) ListStoreOrders(ctx context.Context, storeID string, req *fulfilmentv1.ListStoreOrdersRequest) ([]*order, string, error) {
	size, err := pagetoken.PageSize(req.GetPageSize(), 50, 200)
	if err != nil {
		return nil, "", err
	}
	states, err := stateFilter("states", req.GetStates())
	if err != nil {
		return nil, "", err
	}
	if len(states) == 0 {
		states = []int16{int16(domain.Confirmed), int16(domain.Preparing), int16(domain.Ready)}
	}
	var after listPosition
	hasAfter, err := pagetoken.Decode(req, &after)
	if err != nil {
		return nil, "", err
	}
	sql, args := storeOrdersQuery(storeID, states, after, hasAfter, size)
	orders, err := queryOrders(ctx, s.db, sql, args...)
	if err != nil {
		return nil, "", err
	}
	return page(req, orders, size)
}

// storeOrdersQuery is ListStoreOrders's statement: a store's orders in states, oldest first,
// after the position after where hasAfter, size+1 of them (one more says there is a next page).
func storeOrdersQuery(storeID string, states []int16, after listPosition, hasAfter bool, size int) (string, []any) {
	where, args := []string{"store_id = $1", "state = ANY($2)"}, []any{storeID, states}
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if onlyOpen(states) {
		// Said again as constants, which the planner can match to orders_open_by_store's
		// predicate in any plan, generic or not (it cannot see into $2 in a generic one).
		where = append(where, openStatesSQL)
	}
	if hasAfter {
		where = append(where, "(create_time, id) > ("+arg(time.UnixMicro(after.Time).UTC())+", "+arg(after.ID)+")")
	}
	return `SELECT ` + orderColumns + ` FROM orders WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY create_time, id LIMIT ` + arg(size+1), args
}

func page(req proto.Message, orders []*order, size int) ([]*order, string, error) {
	if len(orders) <= size {
		return orders, "", nil
	}
	orders = orders[:size]
	last := orders[size-1]
	return orders, pagetoken.Encode(req, listPosition{Time: last.CreateTime.UnixMicro(), ID: last.ID}), nil
}
