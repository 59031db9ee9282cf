package personal_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/personal"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Rewrite writes back exactly the copies its redact changed, each under its own key, with the
// extra arguments, and leaves the rest byte for byte.
func TestRewriteWritesBackOnlyTheCopiesItRedacted(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `CREATE TABLE copies (shelf text, seq bigint, payload bytea, PRIMARY KEY (shelf, seq))`); err != nil {
		t.Fatal(err)
	}
	orders := map[int64]*fulfilmentv1.Order{
		1: {Id: "o1", CustomerId: "erin", PickupName: "Erin", CustomerNote: "oat milk"},
		2: {Id: "o2"}, // nothing personal: not rewritten
		3: {Id: "o3", CustomerId: "erin", History: []*fulfilmentv1.Transition{{Actor: &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: "erin"}}}},
		4: {Id: "o4", CustomerId: "sam", PickupName: "Sam"}, // not asked for
	}
	before := map[int64][]byte{}
	for seq, o := range orders {
		b, err := proto.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		before[seq] = b
		for _, shelf := range []string{"a", "b"} {
			if _, err := pool.Exec(ctx, `INSERT INTO copies VALUES ($1, $2, $3)`, shelf, seq, b); err != nil {
				t.Fatal(err)
			}
		}
	}

	var n int
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		n, err = personal.Rewrite[int64](ctx, tx, "copy",
			`SELECT seq, payload FROM copies WHERE shelf = $1 AND seq = ANY ($2) ORDER BY seq FOR UPDATE`, []any{"a", []int64{1, 2, 3}},
			`UPDATE copies SET payload = $2 WHERE seq = $1 AND shelf = $3`, []any{"a"},
			func() *fulfilmentv1.Order { return new(fulfilmentv1.Order) }, personal.RedactOrder)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("rewrote %d copies, want 2 (orders 1 and 3)", n)
	}
	rows, err := pool.Query(ctx, `SELECT shelf, seq, payload FROM copies ORDER BY shelf, seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var (
			shelf   string
			seq     int64
			payload []byte
		)
		if err := rows.Scan(&shelf, &seq, &payload); err != nil {
			t.Fatal(err)
		}
		var o fulfilmentv1.Order
		if err := proto.Unmarshal(payload, &o); err != nil {
			t.Fatal(err)
		}
		redacted := shelf == "a" && (seq == 1 || seq == 3)
		switch {
		case redacted && (o.GetCustomerId() != "" || o.GetPickupName() != "" || o.GetCustomerNote() != "" || actorID(&o) != ""):
			t.Errorf("%s/%d still carries the shopper: %v", shelf, seq, &o)
		case redacted && o.GetId() != orders[seq].GetId():
			t.Errorf("%s/%d lost its order id: %v", shelf, seq, &o)
		case !redacted && string(payload) != string(before[seq]):
			t.Errorf("%s/%d was rewritten: %v", shelf, seq, &o)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// actorID is the id of the first actor in o's history ("" without one).
func actorID(o *fulfilmentv1.Order) string {
	for _, tr := range o.GetHistory() {
		return tr.GetActor().GetId()
	}
	return ""
}
