package edge

import (
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// A plain HTTP handler on an edge that reads its request's body (the pos-adapter's inbound
// vendor webhook, POST /webhooks/vendor/{store_id}, reads it before it checks the signature)
// must get its body within bodyTimeout over HTTP/2 as over HTTP/1.1: otherwise anyone, without
// a signature, holds a handler goroutine and its buffer for as long as they trickle bytes
// (pings keep the connection alive), a few hundred per connection.
func TestAPlainHandlerReadingItsBodyOverHTTP2IsCutOffWhenTheBodyTrickles(t *testing.T) {
	was := bodyTimeout
	t.Cleanup(func() { bodyTimeout = was }) // after the server has stopped
	bodyTimeout = 200 * time.Millisecond

	read := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhooks/vendor/{store_id}", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		read <- err
		w.WriteHeader(http.StatusBadRequest)
	})
	addr, _, _ := serveHandler(t, mux, time.Second, nil)

	for _, h2 := range []bool{false, true} {
		var p http.Protocols
		if h2 {
			p.SetUnencryptedHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		client := &http.Client{Transport: &http.Transport{Protocols: &p}}
		pr, pw := io.Pipe()
		stop := make(chan struct{})
		go func() { // a byte every 100 ms, never the end
			for {
				select {
				case <-stop:
					_ = pw.Close()
					return
				case <-time.After(100 * time.Millisecond):
					if _, err := pw.Write([]byte{'{'}); err != nil {
						return
					}
				}
			}
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhooks/vendor/store-1", pr)
		go func() {
			if res, err := client.Do(req); err == nil {
				_ = res.Body.Close()
			}
		}()
		select {
		case err := <-read:
			t.Logf("HTTP/2 %v: the handler's read ended: %v", h2, err)
			if !errors.Is(err, os.ErrDeadlineExceeded) { // the vendor webhook answers 408 so
				t.Errorf("HTTP/2 %v: the handler's read ended %v; want os.ErrDeadlineExceeded to errors.Is", h2, err)
			}
		case <-time.After(5 * time.Second): // 25 times the limit
			t.Errorf("HTTP/2 %v: a body trickled a byte every 100 ms still held the handler after 5 s (limit %v)", h2, bodyTimeout)
		}
		close(stop)
		client.CloseIdleConnections()
		select { // the handler, once the client stops, ends before the next round
		case <-read:
		case <-time.After(5 * time.Second):
		}
	}
}
