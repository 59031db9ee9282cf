package cart

import "context"

// InsertCartAlone is a new cart's write made alone, as after a failed batch; tests only.
func (s *Service) InsertCartAlone(ctx context.Context, id, customer string) (string, int64, error) {
	c, err := s.insertCart(ctx, createReq{id: id, customer: customer})
	if err != nil {
		return "", 0, err
	}
	return c.ID, c.Version, nil
}
