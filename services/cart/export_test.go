package cart

import "context"

// InsertCartAlone is a new cart's write made alone, as after a failed batch; tests only.
func (s *Service) InsertCartAlone(ctx context.Context, id, customer string) (string, int64, error) {
	out := s.createMany(ctx, []createReq{{id: id, customer: customer, lines: "[]"}})
	if out[0].Err != nil {
		return "", 0, out[0].Err
	}
	return out[0].Value.ID, out[0].Value.Version, nil
}

// LoseEditReplies makes the next n edit batches report failure after their write is stored, as
// when the reply to COMMIT is lost.
func (s *Service) LoseEditReplies(n int32) { s.loseEditReplies.Store(n) }

// KeyedStatements are the statements that find a cart by id, by name.
var KeyedStatements = map[string]string{
	"claim many": claimManySQL, "claim one": claimOneSQL, "edit many": editManySQL, "edit one": editOneSQL,
	"reopen lapsed": reopenLapsedSQL, "end lease": endLeaseSQL, "leave lease": leaveLeaseSQL,
}

// ClaimTogether claims in one batch, as concurrent checkouts' claims go, and gives each
// request's claimed version, or -1 where its claim took nothing.
func (s *Service) ClaimTogether(ctx context.Context, cartID, customer, key string, expectedVersions ...int64) ([]int64, error) {
	reqs := make([]claimReq, len(expectedVersions))
	for i, v := range expectedVersions {
		reqs[i] = claimReq{cartID: cartID, customer: customer, key: key, expectedVersion: v}
	}
	out := make([]int64, len(reqs))
	for i, r := range s.claimMany(ctx, reqs) {
		if r.Err != nil {
			return nil, r.Err
		}
		out[i] = -1
		if r.Value != nil {
			out[i] = r.Value.Version
		}
	}
	return out, nil
}

// ClaimForCheckout is Checkout's claim (step 1) alone; it gives the cart's version claimed.
func (s *Service) ClaimForCheckout(ctx context.Context, customer, cartID, key string, expectedVersion int64) (int64, error) {
	c, _, err := s.claim(ctx, customer, cartID, key, expectedVersion)
	if err != nil {
		return 0, err
	}
	return c.Version, nil
}

// ReopenRejected is what the cart does on hearing that orderID, the order of cartID, was
// rejected (handleRejected's write); it says whether the cart opened. Tests only.
func (s *Service) ReopenRejected(ctx context.Context, cartID, orderID string) (bool, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	opened, err := s.reopenRejected(ctx, tx, cartID, orderID)
	if err != nil {
		return false, err
	}
	s.rows.drop(cartID)
	return opened, tx.Commit(ctx)
}

// DeleteCheckedOutSQL is DeleteCheckedOut's statement.
const DeleteCheckedOutSQL = deleteCheckedOutSQL
