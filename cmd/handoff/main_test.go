package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testKeys is a token key set for processes that are not the one-process mode.
var testKeys = "test:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func TestTokenCommandMintsTokensTheSystemAccepts(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"token", "-role", "staff", "-subject", "till-1", "-stores", "sea-a,sea-b", "-jwt-keys", testKeys}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("token: exit %d: %s", code, errOut.String())
	}
	ks, err := auth.ParseKeySet(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ks.Verify(t.Context(), strings.TrimSpace(out.String()))
	if err != nil || p.Role != auth.RoleStaff || !p.ActsForStore("sea-b") || p.Subject != "till-1" {
		t.Fatalf("minted token verifies as %+v, %v", p, err)
	}
	errOut.Reset()
	if code := run([]string{"token", "-role", "staff", "-subject", "x", "-jwt-keys", testKeys}, func(string) string { return "" }, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "store") {
		t.Fatalf("staff token without stores: exit %d, %q", code, errOut.String())
	}

	// Without -jwt-keys it signs with the development key the one-process mode keeps in its
	// data dir, and never makes one of its own: a token signed by a key the running system does
	// not know would only be refused later, with a less helpful message.
	empty := t.TempDir()
	errOut.Reset()
	if code := run([]string{"token", "-subject", "x", "-data-dir", empty}, func(string) string { return "" }, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), filepath.Join(empty, "dev-jwt.key")) || !strings.Contains(errOut.String(), "-data-dir") {
		t.Fatalf("token where there is no development key: exit %d, %q; want 1 and a message naming the key's path and -data-dir", code, errOut.String())
	}
	if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
		t.Fatalf("token where there is no development key left %v (%v) in the data dir; want nothing", entries, err)
	}
	dataDir := t.TempDir()
	devKeys, err := auth.DevKeySet(dataDir) // as the one-process mode makes it
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"token", "-subject", "ana", "-data-dir", dataDir}, func(string) string { return "" }, &out, io.Discard); code != 0 {
		t.Fatalf("token with the data dir's development key: exit %d", code)
	}
	if p, err := devKeys.Verify(t.Context(), strings.TrimSpace(out.String())); err != nil || p.Subject != "ana" {
		t.Fatalf("a token minted with the data dir's key verifies as %+v, %v", p, err)
	}
}

// A token is minted only for a time ahead: one with a TTL that is not positive would be refused
// by every service as expired.
func TestTokenRefusesATTLThatIsNotPositive(t *testing.T) {
	for _, ttl := range []string{"-1h", "0s"} {
		var errOut bytes.Buffer
		code := run([]string{"token", "-subject", "alice", "-ttl", ttl, "-jwt-keys", testKeys}, func(string) string { return "" }, io.Discard, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "-ttl") {
			t.Errorf("token -ttl %s: exit %d, %q; want 2 and a message naming -ttl", ttl, code, errOut.String())
		}
	}
}

func TestBadConfigurationStopsWithAClearMessage(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-target", "warehouse"}, nil, `-target "warehouse": want one of all,`},
		{[]string{"-target", "catalog"}, nil, "needs NATS_URL"},
		{nil, map[string]string{"HANDOFF_TARGET": "catalog", "NATS_URL": "nats://127.0.0.1:4222"}, "needs HANDOFF_JWT_KEYS"},
		{nil, map[string]string{"HANDOFF_TARGET": "catalog", "NATS_URL": "nats://127.0.0.1:4222", "HANDOFF_JWT_KEYS": testKeys}, "needs DATABASE_URL"},
		{[]string{"-log-level", "loud"}, nil, "-log-level"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{nil, map[string]string{"HANDOFF_STREAM_REPLICAS": "3x"}, `HANDOFF_STREAM_REPLICAS="3x": want a whole number`},
		{nil, map[string]string{"HANDOFF_SHUTDOWN_GRACE": "10"}, `HANDOFF_SHUTDOWN_GRACE="10": want a duration`},
		{[]string{"-currency", "EUR"}, nil, "the demo chain is priced in USD; run with -currency USD, or without the demo (-demo=false)"},
		{[]string{"-currency", "EURO", "-demo=false"}, nil, `-currency "EURO": want an ISO 4217 code`},
		{[]string{"-db-max-conns", "-3"}, nil, `-db-max-conns "-3": want a positive number`},
		{[]string{"-stream-replicas", "7"}, nil, `-stream-replicas "7": want 1 to 5`},
		{[]string{"-shutdown-grace", "-1s"}, nil, `-shutdown-grace "-1s": want a positive duration`},
		{nil, map[string]string{"HANDOFF_TRUSTED_PROXIES": "10.0.0.0/8,ingress.internal"}, "HANDOFF_TRUSTED_PROXIES=\"10.0.0.0/8,ingress.internal\": trusted proxies \"10.0.0.0/8,ingress.internal\": want addresses and CIDR ranges"},
		// Each refusal names where the value came from: the variable, when no flag was given.
		{nil, map[string]string{"HANDOFF_DEMO": "yes"}, `HANDOFF_DEMO="yes": want true or false`},
		{[]string{"-demo", "yes"}, map[string]string{"HANDOFF_DEMO": "true"}, `-demo "yes": want true or false`},
		{nil, map[string]string{"HANDOFF_LOG_LEVEL": "loud"}, `HANDOFF_LOG_LEVEL="loud": want debug`},
		{[]string{"-db-max-conns", "4294967297"}, nil, `-db-max-conns "4294967297": want a positive number up to 10000`},
		{[]string{"-stream-replicas", "3"}, nil, `-stream-replicas "3": the embedded NATS server keeps one copy`},
		// Refusals of the stack's own checks name the setting too, the variable when it was one.
		{nil, map[string]string{"HANDOFF_DB_MAX_CONNS": "-3"}, `HANDOFF_DB_MAX_CONNS="-3": want a positive number`},
		{nil, map[string]string{"HANDOFF_START_WAIT": "-2s"}, `HANDOFF_START_WAIT="-2s": want a positive duration`},
		// The identity provider's settings go together, and its keys come over https.
		{[]string{"-jwt-jwks-url", "http://login.example/jwks", "-jwt-issuer", "i", "-jwt-audience", "a"}, nil, `-jwt-jwks-url "http://login.example/jwks": want https (http only to a loopback address)`},
		{nil, map[string]string{"HANDOFF_JWT_JWKS_URL": "https://login.example/jwks", "HANDOFF_JWT_AUDIENCE": "handoff"}, `-jwt-issuer "": needed with jwt-jwks-url`},
		{nil, map[string]string{"HANDOFF_JWT_ISSUER": "https://login.example/"}, `-jwt-jwks-url "": needed with jwt-issuer and jwt-audience`},
		// A secret too short is refused at once, named and not repeated.
		{[]string{"-pickup-code-secret", "short-secret"}, nil, "-pickup-code-secret: want at least 16 bytes, the same in every copy; got 12"},
		{nil, map[string]string{"HANDOFF_NOTIFY_WEBHOOK_SECRET": "tiny"}, "HANDOFF_NOTIFY_WEBHOOK_SECRET: want at least 16 bytes; got 4"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		code := run(c.args, func(k string) string { return c.env[k] }, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("run(%v, %v) = %d, %q; want 2 and a message containing %q", c.args, c.env, code, stderr.String(), c.want)
		}
		for _, secret := range []string{"short-secret", "tiny"} {
			if strings.Contains(stderr.String(), secret) {
				t.Errorf("run(%v, %v) printed the secret: %q", c.args, c.env, stderr.String())
			}
		}
	}
}

// The usage text, printed for -help and after any flag error, names where a secret comes from
// but never prints it.
// A flag given wins over its variable: a variable it overrides is not checked.
func TestAFlagGivenOverridesABadVariable(t *testing.T) {
	env := map[string]string{"HANDOFF_SHUTDOWN_GRACE": "10", "HANDOFF_DB_MAX_CONNS": "many"}
	s, err := parseSettings([]string{"-shutdown-grace", "10s", "-db-max-conns", "8"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("flags given over bad variables: %v", err)
	}
	if s.stack.ShutdownGrace != 10*time.Second || s.stack.DBMaxConns != 8 {
		t.Fatalf("shutdown grace %v, db max conns %d; want the flags' 10s and 8", s.stack.ShutdownGrace, s.stack.DBMaxConns)
	}
}

func TestIdentityProviderSettingsAreRead(t *testing.T) {
	env := map[string]string{"HANDOFF_JWT_JWKS_URL": "https://a.example/jwks, https://b.example/jwks", "HANDOFF_JWT_ISSUER": "https://a.example/", "HANDOFF_JWT_AUDIENCE": "handoff-api"}
	s, err := parseSettings([]string{"-jwt-jwks-refresh", "90s"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	idp := s.stack.IdentityProvider
	if !slices.Equal(idp.JWKSURLs, []string{"https://a.example/jwks", "https://b.example/jwks"}) || idp.Issuer != "https://a.example/" || idp.Audience != "handoff-api" || idp.Refresh != 90*time.Second {
		t.Fatalf("identity provider %+v; want both URLs, the issuer, the audience and 90s", idp)
	}
}

func TestUsageNeverPrintsSecrets(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL": "postgres://handoff:db-password-1@db/handoff", "NATS_URL": "nats://user:nats-password-2@nats:4222",
		"HANDOFF_JWT_KEYS": testKeys, "HANDOFF_PICKUP_CODE_SECRET": "pickup-secret-3-0123456789",
		"HANDOFF_NOTIFY_WEBHOOK_SECRET": "webhook-secret-4", "HANDOFF_SMTP_PASSWORD": "smtp-password-5",
		"CATALOG_DATABASE_URL": "postgres://catalog:db-password-6@db/catalog",
	}
	for _, args := range [][]string{{"-help"}, {"-shutdown-grace", "10"}, {"token", "-help"}} {
		var stderr bytes.Buffer
		code := run(args, func(k string) string { return env[k] }, io.Discard, &stderr)
		out := stderr.String()
		if args[len(args)-1] == "-help" && code != 0 {
			t.Errorf("run(%v) = %d; asking for help is no error", args, code)
		}
		if args[0] == "token" {
			if !strings.Contains(out, "HANDOFF_JWT_KEYS") {
				t.Errorf("handoff token -help does not say where the keys come from:\n%s", out)
			}
		} else if !strings.Contains(out, "set in HANDOFF_JWT_KEYS, not shown") {
			t.Errorf("run(%v): the usage does not say where the keys come from:\n%s", args, out)
		}
		for _, secret := range []string{"db-password-1", "nats-password-2", testKeys, "pickup-secret-3", "webhook-secret-4", "smtp-password-5", "db-password-6"} {
			if strings.Contains(out, secret) {
				t.Errorf("run(%v) printed the secret %q in:\n%s", args, secret, out)
			}
		}
	}
}

// -help lists every setting, the per-service database URLs too, which have no flag.
func TestUsageNamesTheServiceDatabaseURLs(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"-help"}, func(string) string { return "" }, io.Discard, &stderr); code != 0 {
		t.Fatalf("handoff -help = %d; want 0", code)
	}
	for _, name := range serviceDatabaseEnv {
		if !strings.Contains(stderr.String(), name) {
			t.Errorf("handoff -help does not name %s:\n%s", name, stderr.String())
		}
	}
}

// process is a running handoff binary.
type process struct {
	cmd     *exec.Cmd
	gateway string
	exited  chan error
}

var readyLine = regexp.MustCompile(`Handoff is ready \(\S+\): (?:gateway http://(\S+) )?`)

// startBinary runs the real binary in the one-process mode with its own private PostgreSQL and
// embedded NATS in dataDir, and waits for its ready line.
func startBinary(t *testing.T, bin, dataDir string) *process {
	t.Helper()
	return startTarget(t, bin, nil, "HANDOFF_DATA_DIR="+dataDir, "DATABASE_URL=", "NATS_URL=",
		"HANDOFF_EMBEDDED_NATS_ADDR=127.0.0.1:0", "HANDOFF_GATEWAY_ADDR=127.0.0.1:0", "HANDOFF_POS_ADDR=127.0.0.1:0",
		"HANDOFF_METRICS_ADDR=127.0.0.1:0", "HANDOFF_CATALOG_ADDR=127.0.0.1:0", "HANDOFF_INVENTORY_ADDR=127.0.0.1:0",
		"HANDOFF_CART_ADDR=127.0.0.1:0", "HANDOFF_FULFILMENT_ADDR=127.0.0.1:0")
}

// startTarget runs the binary with args and extra environment and waits for its ready line.
func startTarget(t *testing.T, bin string, args []string, env ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "handoff.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := readyLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case p.gateway = <-found:
		return p
	case err := <-p.exited:
		logs, _ := os.ReadFile(logFile.Name())
		t.Fatalf("handoff exited before ready: %v\n%s", err, logs)
	case <-time.After(2 * time.Minute):
		logs, _ := os.ReadFile(logFile.Name())
		t.Fatalf("handoff not ready after 2 minutes\n%s", logs)
	}
	return nil
}

// buildBinary compiles cmd/handoff once per test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "handoff")
	build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (p *process) countProducts(t *testing.T) int {
	t.Helper()
	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+p.gateway, connect.WithGRPCWeb())
	n, token := 0, ""
	for {
		res, err := c.ListProducts(t.Context(), connect.NewRequest(&catalogv1.ListProductsRequest{PageSize: 100, PageToken: token}))
		if err != nil {
			t.Fatalf("ListProducts through the gateway: %v", err)
		}
		n += len(res.Msg.GetProducts())
		if token = res.Msg.GetNextPageToken(); token == "" {
			return n
		}
	}
}

// postgresOf lists live postgres processes serving dataDir.
func postgresOf(t *testing.T, dataDir string) []string {
	t.Helper()
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, "postgres") && strings.Contains(cmdline, dataDir) {
			found = append(found, strings.TrimSpace(cmdline))
		}
	}
	return found
}

func (p *process) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(45 * time.Second):
		t.Fatal("handoff did not exit within 45s")
		return nil
	}
}

// The binary as a newcomer runs it: demo loaded, SIGTERM stops it with nothing left behind,
// a restart finds the same data, and even SIGKILL leaves no orphaned PostgreSQL.
func TestBinaryStopsCleanlyAndRestartsOnItsData(t *testing.T) {
	bin := buildBinary(t)
	dataDir := t.TempDir()

	p := startBinary(t, bin, dataDir)
	products := p.countProducts(t)
	if products < 100 {
		t.Fatalf("demo catalog has %d products through the gateway; want the ~113 demo products", products)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v; want status 0", err)
	}
	if left := postgresOf(t, dataDir); len(left) > 0 {
		t.Fatalf("postgres still running after SIGTERM: %v", left)
	}

	p = startBinary(t, bin, dataDir)
	if got := p.countProducts(t); got != products {
		t.Fatalf("after restart %d products, want the same %d (data kept, demo not loaded twice)", got, products)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.waitExit(t)
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if left := postgresOf(t, dataDir); len(left) > 0 {
			return fmt.Errorf("postgres orphaned after SIGKILL of its parent: %v", left)
		}
		return nil
	})

	p = startBinary(t, bin, dataDir)
	if got := p.countProducts(t); got != products {
		t.Fatalf("after a SIGKILL and restart %d products, want %d", got, products)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// Production shape: each part its own process, against an external NATS (configured as
// deploy/nats-server.conf says: it takes only Handoff's authenticated clients) and PostgreSQL.
func TestTargetsRunAsSeparateProcessesAgainstExternalNATSAndPostgres(t *testing.T) {
	bin := buildBinary(t)
	natsURL := deployNATS(t)
	dbURL := testenv.FreshDatabaseURL(t)
	catalogAddr := testenv.FreeAddr(t)
	common := []string{"NATS_URL=" + natsURL, "HANDOFF_CATALOG_ADDR=" + catalogAddr, "HANDOFF_JWT_KEYS=" + testKeys}

	// The catalog has a database of its own (CATALOG_DATABASE_URL) and none other: no private
	// PostgreSQL is started for it in its data dir.
	catalogData := t.TempDir()
	catalogProc := startTarget(t, bin, []string{"-target", "catalog", "-demo=true", "-metrics-addr", "127.0.0.1:0", "-data-dir", catalogData},
		append(common, "CATALOG_DATABASE_URL="+dbURL, "DATABASE_URL=")...)
	if _, err := os.Stat(filepath.Join(catalogData, "postgres")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the catalog target with its own database URL made a private PostgreSQL in its data dir (%v)", err)
	}
	gw := startTarget(t, bin, []string{"-target", "gateway", "-gateway-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"}, common...)
	if gw.gateway == "" {
		t.Fatal("gateway target printed no gateway address")
	}
	if n := gw.countProducts(t); n < 100 {
		t.Fatalf("gateway process lists %d products from the catalog process; want the demo catalog", n)
	}
	for _, p := range []*process{gw, catalogProc} {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.waitExit(t); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	}
}

// The ready line names every port a person may call, the services' own gRPC ports (where the
// admin APIs are) in the one-process mode too.
func TestReadyLineNamesTheAdminPorts(t *testing.T) {
	line := readyMessage(stack.TargetAll, stack.Ready{GatewayAddr: "127.0.0.1:8080", NATSURL: "nats://127.0.0.1:4223",
		ServiceAddrs: map[string]string{stack.TargetCatalog: "127.0.0.1:9101", stack.TargetFulfilment: "127.0.0.1:9104"}})
	if !strings.Contains(line, "gRPC (admin APIs) catalog 127.0.0.1:9101, fulfilment 127.0.0.1:9104") {
		t.Fatalf("ready line %q does not name the services' gRPC ports", line)
	}
	if !readyLine.MatchString(line) {
		t.Fatalf("ready line %q no longer matches what scripts wait for", line)
	}
}
