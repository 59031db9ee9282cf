package notify_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// webhookReceiver is a real HTTP endpoint that checks every request's signature the way a
// receiver would, with its own HMAC code, and answers with whatever status the test scripts.
type webhookReceiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server

	mu        sync.Mutex
	answer    func(eventID string, attempt int) int // status for the attempt-th request of eventID
	requests  map[string][]time.Time                // by event id, every request
	delivered map[string]int                        // by event id, 2xx answers
	bodies    map[string]map[string]any             // by event id, the last body
	versions  map[string]string                     // by event id, the order version header
	problems  []string                              // signature or header faults
}

func newWebhookReceiver(t *testing.T, secret string) *webhookReceiver {
	r := &webhookReceiver{
		t: t, secret: secret,
		answer:    func(string, int) int { return http.StatusNoContent },
		requests:  map[string][]time.Time{},
		delivered: map[string]int{},
		bodies:    map[string]map[string]any{},
		versions:  map[string]string{},
	}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *webhookReceiver) setAnswer(f func(eventID string, attempt int) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = f
}

func (r *webhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("Handoff-Event-Id")
	problem := r.checkSignature(req, body)
	r.mu.Lock()
	if problem != "" {
		r.problems = append(r.problems, id+": "+problem)
		r.mu.Unlock()
		http.Error(w, problem, http.StatusUnauthorized)
		return
	}
	r.requests[id] = append(r.requests[id], time.Now())
	code := r.answer(id, len(r.requests[id]))
	if code >= 200 && code < 300 {
		r.delivered[id]++
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		r.bodies[id] = m
		r.versions[id] = req.Header.Get("Handoff-Order-Version")
	}
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (r *webhookReceiver) checkSignature(req *http.Request, body []byte) string {
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		return "want a JSON POST, got " + req.Method + " " + req.Header.Get("Content-Type")
	}
	var ts, v1 string
	for _, part := range strings.Split(req.Header.Get("Handoff-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	m := hmac.New(sha256.New, []byte(r.secret))
	m.Write([]byte(ts + "." + string(body)))
	if want := hex.EncodeToString(m.Sum(nil)); ts == "" || v1 != want {
		return "bad signature " + req.Header.Get("Handoff-Signature")
	}
	return ""
}

func (r *webhookReceiver) snapshot() (requests map[string][]time.Time, delivered map[string]int, problems []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	requests = make(map[string][]time.Time, len(r.requests))
	for k, v := range r.requests {
		requests[k] = append([]time.Time(nil), v...)
	}
	delivered = make(map[string]int, len(r.delivered))
	for k, v := range r.delivered {
		delivered[k] = v
	}
	return requests, delivered, append([]string(nil), r.problems...)
}

func (r *webhookReceiver) body(id string) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[id]
}

func (r *webhookReceiver) orderVersion(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.versions[id]
}

// smtpServer is a real, minimal SMTP server (RFC 5321 subset: EHLO/HELO, MAIL, RCPT, DATA,
// RSET, NOOP, QUIT) on a loopback port. rcptReply scripts the answer to RCPT TO per attempt.
type smtpServer struct {
	t  *testing.T
	ln net.Listener

	mu        sync.Mutex
	rcptReply func(to string, attempt int) string // "" accepts
	rcpts     map[string]int
	mails     []receivedMail
	wg        sync.WaitGroup
}

type receivedMail struct {
	From string
	To   []string
	Data []byte
}

func newSMTPServer(t *testing.T) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveSMTP(t, ln)
}

// serveSMTP answers SMTP on ln until the test ends.
func serveSMTP(t *testing.T, ln net.Listener) *smtpServer {
	s := &smtpServer{t: t, ln: ln, rcpts: map[string]int{}, rcptReply: func(string, int) string { return "" }}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *smtpServer) addr() string { return s.ln.Addr().String() }

func (s *smtpServer) serve(nc net.Conn) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := textproto.NewConn(nc)
	reply := func(line string) { _ = c.PrintfLine("%s", line) }
	reply("220 test.local ESMTP ready")
	var cur receivedMail
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply("250-test.local greets " + arg)
			reply("250 8BITMIME")
		case "HELO", "NOOP":
			reply("250 ok")
		case "RSET":
			cur = receivedMail{}
			reply("250 ok")
		case "MAIL":
			cur = receivedMail{From: addrArg(arg)}
			reply("250 ok")
		case "RCPT":
			to := addrArg(arg)
			s.mu.Lock()
			s.rcpts[to]++
			r := s.rcptReply(to, s.rcpts[to])
			s.mu.Unlock()
			if r != "" {
				reply(r)
				continue
			}
			cur.To = append(cur.To, to)
			reply("250 ok")
		case "DATA":
			if len(cur.To) == 0 {
				reply("503 need RCPT first")
				continue
			}
			reply("354 end with <CRLF>.<CRLF>")
			data, err := c.ReadDotBytes()
			if err != nil {
				return
			}
			cur.Data = data
			s.mu.Lock()
			s.mails = append(s.mails, cur)
			s.mu.Unlock()
			cur = receivedMail{}
			reply("250 queued")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 not implemented")
		}
	}
}

func addrArg(arg string) string {
	// "FROM:<a@b> BODY=8BITMIME": the path, without its parameters.
	_, a, _ := strings.Cut(arg, ":")
	a, _, _ = strings.Cut(strings.TrimSpace(a), " ")
	return strings.Trim(a, "<>")
}

func (s *smtpServer) received() []receivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedMail(nil), s.mails...)
}

// parsedMail is a received message read back as a mail client would.
type parsedMail struct {
	Header  mail.Header
	Subject string
	Body    string
}

func parseMail(t *testing.T, data []byte) parsedMail {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("received mail does not parse: %v\n%s", err, data)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject does not decode: %v", err)
	}
	var body []byte
	if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body, err = io.ReadAll(quotedprintable.NewReader(m.Body))
	} else {
		body, err = io.ReadAll(m.Body)
	}
	if err != nil {
		t.Fatalf("body does not decode: %v", err)
	}
	return parsedMail{Header: m.Header, Subject: subject, Body: string(body)}
}
