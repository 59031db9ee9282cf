package catalog_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// Updates racing at one expected_version: exactly one goes through, each other is Aborted, in
// every round. The check of the version read and the write must not let two writers that read
// one version both write (the second over the first: a lost update).
func TestConcurrentUpdatesAtOneVersionLetExactlyOneThrough(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.createTestCategory(t)
	created, err := e.admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: validProduct()})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetProduct().GetId()
	const writers = 16
	for round := range 5 {
		cur, err := e.public.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: id})
		if err != nil {
			t.Fatal(err)
		}
		v := cur.GetProduct().GetVersion()
		var (
			wg               sync.WaitGroup
			mu               sync.Mutex
			through, aborted int
			winner           string
		)
		for i := range writers {
			name := fmt.Sprintf("Name %d-%d", round, i)
			wg.Go(func() {
				_, err := e.admin.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{
					Product:         &catalogv1.Product{Id: id, Name: name},
					UpdateMask:      &fieldmaskpb.FieldMask{Paths: []string{"name"}},
					ExpectedVersion: v,
				})
				mu.Lock()
				defer mu.Unlock()
				switch status.Code(err) {
				case codes.OK:
					through++
					winner = name
				case codes.Aborted:
					aborted++
				default:
					t.Errorf("update: %v", err)
				}
			})
		}
		wg.Wait()
		if through != 1 || aborted != writers-1 {
			t.Fatalf("round %d: %d updates at version %d went through and %d were aborted; want 1 and %d", round, through, v, aborted, writers-1)
		}
		after, err := e.public.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: id})
		if err != nil {
			t.Fatal(err)
		}
		if got := after.GetProduct(); got.GetName() != winner || got.GetVersion() != v+1 {
			t.Fatalf("round %d: the product is %q at version %d; want the one update through, %q at %d", round, got.GetName(), got.GetVersion(), winner, v+1)
		}
	}
}
