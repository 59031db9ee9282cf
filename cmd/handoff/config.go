package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/egress"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// settings is the parsed command line and environment: every flag has an environment variable,
// and the flag wins when both are given.
type settings struct {
	stack     stack.Config
	logLevel  slog.Level
	logFormat string
}

// envVar names the environment variable behind each flag (documented in the README).
var envVar = map[string]string{
	"target":                  "HANDOFF_TARGET",
	"data-dir":                "HANDOFF_DATA_DIR",
	"database-url":            "DATABASE_URL",
	"postgres-port":           "HANDOFF_POSTGRES_PORT",
	"db-max-conns":            "HANDOFF_DB_MAX_CONNS",
	"nats-url":                "NATS_URL",
	"embedded-nats-addr":      "HANDOFF_EMBEDDED_NATS_ADDR",
	"stream-replicas":         "HANDOFF_STREAM_REPLICAS",
	"gateway-addr":            "HANDOFF_GATEWAY_ADDR",
	"pos-addr":                "HANDOFF_POS_ADDR",
	"metrics-addr":            "HANDOFF_METRICS_ADDR",
	"catalog-addr":            "HANDOFF_CATALOG_ADDR",
	"inventory-addr":          "HANDOFF_INVENTORY_ADDR",
	"cart-addr":               "HANDOFF_CART_ADDR",
	"fulfilment-addr":         "HANDOFF_FULFILMENT_ADDR",
	"allowed-origins":         "HANDOFF_ALLOWED_ORIGINS",
	"trusted-proxies":         "HANDOFF_TRUSTED_PROXIES",
	"webhook-allow-networks":  "HANDOFF_WEBHOOK_ALLOW_NETWORKS",
	"currency":                "HANDOFF_CURRENCY",
	"jwt-keys":                "HANDOFF_JWT_KEYS",
	"jwt-jwks-url":            "HANDOFF_JWT_JWKS_URL",
	"jwt-issuer":              "HANDOFF_JWT_ISSUER",
	"jwt-audience":            "HANDOFF_JWT_AUDIENCE",
	"jwt-jwks-refresh":        "HANDOFF_JWT_JWKS_REFRESH",
	"pickup-code-secret":      "HANDOFF_PICKUP_CODE_SECRET",
	"notify-webhook-url":      "HANDOFF_NOTIFY_WEBHOOK_URL",
	"notify-webhook-secret":   "HANDOFF_NOTIFY_WEBHOOK_SECRET",
	"smtp-addr":               "HANDOFF_SMTP_ADDR",
	"smtp-from":               "HANDOFF_SMTP_FROM",
	"smtp-username":           "HANDOFF_SMTP_USERNAME",
	"smtp-password":           "HANDOFF_SMTP_PASSWORD",
	"smtp-tls":                "HANDOFF_SMTP_TLS",
	"demo":                    "HANDOFF_DEMO",
	"personal-data-retention": "HANDOFF_PERSONAL_DATA_RETENTION",
	"shutdown-grace":          "HANDOFF_SHUTDOWN_GRACE",
	"drain-delay":             "HANDOFF_DRAIN_DELAY",
	"start-wait":              "HANDOFF_START_WAIT",
	"log-level":               "HANDOFF_LOG_LEVEL",
	"log-format":              "HANDOFF_LOG_FORMAT",
}

// secretFlags hold passwords or keys (a database URL may carry its password): the usage text
// never prints their values, which come from the environment.
var secretFlags = map[string]bool{
	"database-url": true, "nats-url": true, "jwt-keys": true, "pickup-code-secret": true,
	"notify-webhook-secret": true, "smtp-password": true, "notify-webhook-url": true, // a URL may carry a token
}

// serviceDatabaseEnv lets each service have its own database.
var serviceDatabaseEnv = map[string]string{
	stack.TargetCatalog:    "CATALOG_DATABASE_URL",
	stack.TargetInventory:  "INVENTORY_DATABASE_URL",
	stack.TargetCart:       "CART_DATABASE_URL",
	stack.TargetFulfilment: "FULFILMENT_DATABASE_URL",
	stack.TargetPOSAdapter: "POS_DATABASE_URL",
}

func parseSettings(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	fs := flag.NewFlagSet("handoff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(envVar[name]); v != "" {
			return v
		}
		return def
	}
	// Numbers and durations from the environment are checked here, as flag parsing checks
	// those on the command line: a bad value stops the process, never becomes a default.
	// A flag given wins over its variable, so a bad variable counts only when its flag is not
	// given (see the check after parsing).
	type envErr struct {
		flag string
		err  error
	}
	var envErrs []envErr
	envInt := func(name, def string) int {
		v := env(name, def)
		n, err := strconv.Atoi(v)
		if err != nil {
			envErrs = append(envErrs, envErr{name, fmt.Errorf("%s=%q: want a whole number", envVar[name], v)})
		}
		return n
	}
	envDuration := func(name, def string) time.Duration {
		v := env(name, def)
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs = append(envErrs, envErr{name, fmt.Errorf("%s=%q: want a duration such as 10s", envVar[name], v)})
		}
		return d
	}
	var (
		s           settings
		origins     string
		jwksURLs    string
		proxies     string
		webhookNets string
		demo        string
		level       string
	)
	c := &s.stack
	fs.StringVar(&c.Target, "target", env("target", stack.TargetAll), "part to run: "+strings.Join(stack.Targets, " | "))
	fs.StringVar(&c.DataDir, "data-dir", env("data-dir", ".data"), "local state of the all target: JetStream files and the private PostgreSQL")
	fs.StringVar(&c.DatabaseURL, "database-url", env("database-url", ""), "PostgreSQL URL for every service (empty with the all target: start a private cluster)")
	fs.IntVar(&c.PostgresPort, "postgres-port", envInt("postgres-port", "0"), "port of the private PostgreSQL (0: any free port)")
	fs.StringVar(&c.NATSURL, "nats-url", env("nats-url", ""), "external NATS server (empty with the all target: embed one)")
	fs.StringVar(&c.EmbeddedNATSAddr, "embedded-nats-addr", env("embedded-nats-addr", "127.0.0.1:4223"), "listen address of the embedded NATS server")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", envInt("db-max-conns", "0"), "Postgres connections per service pool at most (each service and the pos-adapter has one; 0: the database URL's pool_max_conns, else "+strconv.Itoa(stack.DefaultDBMaxConns)+")")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", envInt("stream-replicas", "1"), "JetStream replicas per stream (3 in a production cluster)")
	fs.StringVar(&c.GatewayAddr, "gateway-addr", env("gateway-addr", "127.0.0.1:8080"), "gateway listen address (gRPC-web, gRPC, Connect)")
	fs.StringVar(&c.POSAdapterAddr, "pos-addr", env("pos-addr", "127.0.0.1:8090"), "pos-adapter listen address")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("metrics-addr", "127.0.0.1:9090"), "Prometheus /metrics listen address (off, or empty on the command line: none)")
	fs.StringVar(&c.CatalogAddr, "catalog-addr", env("catalog-addr", "127.0.0.1:9101"), "catalog gRPC address (listen, or dial from the edges)")
	fs.StringVar(&c.InventoryAddr, "inventory-addr", env("inventory-addr", "127.0.0.1:9102"), "inventory gRPC address (listen, or dial from the edges)")
	fs.StringVar(&c.CartAddr, "cart-addr", env("cart-addr", "127.0.0.1:9103"), "cart gRPC address (listen, or dial from the edges)")
	fs.StringVar(&c.FulfilmentAddr, "fulfilment-addr", env("fulfilment-addr", "127.0.0.1:9104"), "fulfilment gRPC address (listen, or dial from the edges)")
	fs.StringVar(&origins, "allowed-origins", env("allowed-origins", ""), "comma-separated browser origins for CORS; empty: * with the all target, none otherwise")
	fs.StringVar(&proxies, "trusted-proxies", env("trusted-proxies", ""), "comma-separated addresses and CIDR ranges of the reverse proxies in front of the gateway and pos-adapter: their X-Forwarded-For names the client for rate limits (empty: the peer is the client)")
	fs.StringVar(&webhookNets, "webhook-allow-networks", env("webhook-allow-networks", ""), "comma-separated CIDR ranges and addresses besides the public internet that stores' vendor webhooks may reach: a vendor POS on your own network, 127.0.0.0/8 in development (empty: public addresses only)")
	fs.StringVar(&c.Currency, "currency", env("currency", "USD"), "ISO 4217 currency of the catalog")
	fs.StringVar(&c.PickupCodeSecret, "pickup-code-secret", env("pickup-code-secret", ""), "secret pickup codes are derived from, 16+ bytes (empty with the all target: a development secret in the data dir)")
	fs.StringVar(&c.Notify.WebhookURL, "notify-webhook-url", env("notify-webhook-url", ""), "customer notifications as signed webhooks to this URL (empty: off)")
	fs.StringVar(&c.Notify.WebhookSecret, "notify-webhook-secret", env("notify-webhook-secret", ""), "HMAC-SHA256 secret signing notification webhooks")
	fs.StringVar(&c.Notify.SMTPAddr, "smtp-addr", env("smtp-addr", ""), "SMTP server host:port for shopper emails (empty: off)")
	fs.StringVar(&c.Notify.SMTPFrom, "smtp-from", env("smtp-from", ""), "sender address of shopper emails")
	fs.StringVar(&c.Notify.SMTPUsername, "smtp-username", env("smtp-username", ""), "SMTP user, when the server needs one")
	fs.StringVar(&c.Notify.SMTPPassword, "smtp-password", env("smtp-password", ""), "SMTP password")
	fs.StringVar(&c.Notify.SMTPTLS, "smtp-tls", env("smtp-tls", notify.SMTPStartTLS), "encryption of shopper emails: starttls (when offered), require (STARTTLS or nothing sent), implicit (TLS from the first byte, port 465)")
	fs.StringVar(&c.JWTKeys, "jwt-keys", env("jwt-keys", ""), "token keys kid:base64key[,...], first signs (empty with the all target: a development key in the data dir)")
	fs.StringVar(&jwksURLs, "jwt-jwks-url", env("jwt-jwks-url", ""), "comma-separated JWK Set URLs (jwks_uri) of the retailer's identity provider, whose tokens are accepted besides Handoff's own (empty: none)")
	fs.StringVar(&c.IdentityProvider.Issuer, "jwt-issuer", env("jwt-issuer", ""), "the identity provider's issuer (iss claim), exactly; needed with -jwt-jwks-url")
	fs.StringVar(&c.IdentityProvider.Audience, "jwt-audience", env("jwt-audience", ""), "the audience (aud claim) the identity provider puts in tokens for Handoff; needed with -jwt-jwks-url")
	fs.DurationVar(&c.IdentityProvider.Refresh, "jwt-jwks-refresh", envDuration("jwt-jwks-refresh", auth.DefaultProviderRefresh.String()), "how often the identity provider's keys are fetched again: a withdrawn key is refused from the next fetch")
	fs.StringVar(&demo, "demo", env("demo", ""), "load the demo chain into an empty database (default: true with the all target)")
	fs.DurationVar(&c.PersonalDataRetention, "personal-data-retention", envDuration("personal-data-retention", stack.DefaultPersonalDataRetention.String()), "how long after an order ended its shopper's pickup name, email and note are kept before an hourly sweep clears them")
	fs.DurationVar(&c.StartWait, "start-wait", envDuration("start-wait", stack.DefaultStartWait.String()), "how long a start waits for an external NATS or PostgreSQL that does not answer yet")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", envDuration("shutdown-grace", "10s"), "how long to drain on SIGTERM (a whole stop takes at most this + the drain delay + "+stack.MaxShutdown(0, 0).String()+")")
	fs.DurationVar(&c.DrainDelay, "drain-delay", envDuration("drain-delay", "0s"), "how long, on SIGTERM, the servers go on taking calls while their health says NOT_SERVING, before they drain: a load balancer or Kubernetes Service stops sending new connections meanwhile (0: none)")
	fs.StringVar(&level, "log-level", env("log-level", "info"), "debug | info | warn | error")
	fs.StringVar(&s.logFormat, "log-format", env("log-format", "text"), "text | json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: handoff [flags]\n       handoff token -role customer|staff|admin -subject ID (mints a token for local use; handoff token -help)\n\nRuns Handoff. With no flags, the whole system in one process with demo data.\nEvery flag can also be set by the environment variable in brackets.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			switch {
			case secretFlags[f.Name] && f.DefValue != "":
				def = " (default set in " + envVar[f.Name] + ", not shown)"
			case f.DefValue != "":
				// An empty default is explained by the usage text itself ("empty: ...").
				def = " (default " + strconv.Quote(f.DefValue) + ")"
			}
			fmt.Fprintf(stderr, "  -%s [%s]\n    \t%s%s\n", f.Name, envVar[f.Name], f.Usage, def)
		})
		// The per-service database URLs have no flag; their values (passwords) are never shown.
		var names []string
		for _, t := range stack.Targets {
			if name, ok := serviceDatabaseEnv[t]; ok {
				names = append(names, name)
			}
		}
		fmt.Fprintf(stderr, "\nEnvironment only:\n  %s\n    \tPostgreSQL URL of one service (catalog, inventory, cart, fulfilment, pos-adapter), to give it a database of its own (default: -database-url)\n", strings.Join(names, ", "))
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	for _, e := range envErrs {
		if !given[e.flag] {
			errs = append(errs, e.err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	// setting names where a refused value came from: the flag given, or its variable.
	setting := func(name, value string) string {
		if !given[name] && getenv(envVar[name]) != "" {
			return fmt.Sprintf("%s=%q", envVar[name], value)
		}
		return fmt.Sprintf("-%s %q", name, value)
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q (see -help)", fs.Arg(0))
	}
	if err := s.logLevel.UnmarshalText([]byte(level)); err != nil {
		return s, fmt.Errorf("%s: want debug, info, warn or error", setting("log-level", level))
	}
	if s.logFormat != "text" && s.logFormat != "json" {
		return s, fmt.Errorf("%s: want text or json", setting("log-format", s.logFormat))
	}
	switch {
	case origins != "":
		for _, o := range strings.Split(origins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.AllowedOrigins = append(c.AllowedOrigins, o)
			}
		}
	case c.Target == stack.TargetAll:
		c.AllowedOrigins = []string{"*"} // a laptop: any local web app may call it
	}
	for _, u := range strings.Split(jwksURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.IdentityProvider.JWKSURLs = append(c.IdentityProvider.JWKSURLs, u)
		}
	}
	if err := notify.CheckSMTPTLS(c.Notify.SMTPTLS); err != nil {
		return s, fmt.Errorf("%s: %w", setting("smtp-tls", c.Notify.SMTPTLS), err)
	}
	// Ports and addresses are checked here, naming the setting: past here a bad one fails deep
	// in a start (initdb run, then PostgreSQL's own complaint), or as a port taken.
	if c.PostgresPort < 0 || c.PostgresPort > 65535 {
		return s, fmt.Errorf("%s: want a port from 1 to 65535, or 0 for any free one", setting("postgres-port", strconv.Itoa(c.PostgresPort)))
	}
	for _, a := range []struct{ name, value, service string }{
		{"embedded-nats-addr", c.EmbeddedNATSAddr, ""}, {"gateway-addr", c.GatewayAddr, ""}, {"pos-addr", c.POSAdapterAddr, ""},
		{"catalog-addr", c.CatalogAddr, stack.TargetCatalog}, {"inventory-addr", c.InventoryAddr, stack.TargetInventory},
		{"cart-addr", c.CartAddr, stack.TargetCart}, {"fulfilment-addr", c.FulfilmentAddr, stack.TargetFulfilment},
		{"metrics-addr", c.MetricsAddr, ""},
	} {
		switch {
		case a.name == "metrics-addr" && (a.value == "" || a.value == "off"):
			continue
		case a.service != "" && c.Target != stack.TargetAll && c.Target != a.service && strings.Contains(a.value, "://"):
			continue // a gRPC target an edge dials (dns:///…, unix:///…), not an address to listen on
		}
		if err := checkAddr(a.value); err != nil {
			return s, fmt.Errorf("%s: %w", setting(a.name, a.value), err)
		}
	}
	trusted, err := edge.ParseTrustedProxies(proxies)
	if err != nil {
		return s, fmt.Errorf("%s: %w", setting("trusted-proxies", proxies), err)
	}
	c.TrustedProxies = trusted
	if c.WebhookAllowNetworks, err = egress.ParseNetworks(webhookNets); err != nil {
		return s, fmt.Errorf("%s: %w", setting("webhook-allow-networks", webhookNets), err)
	}
	if c.MetricsAddr == "off" {
		// An empty variable means the default, as for every setting; off says none.
		c.MetricsAddr = ""
	}
	switch demo {
	case "":
		c.LoadDemo = c.Target == stack.TargetAll
	default:
		b, err := strconv.ParseBool(demo)
		if err != nil {
			return s, fmt.Errorf("%s: want true or false", setting("demo", demo))
		}
		c.LoadDemo = b
	}
	c.ServiceDatabaseURLs = map[string]string{}
	for svc, name := range serviceDatabaseEnv {
		if v := getenv(name); v != "" {
			c.ServiceDatabaseURLs[svc] = v
		}
	}
	if err := c.Validate(); err != nil {
		var se *stack.SettingError
		if errors.As(err, &se) {
			if _, known := envVar[se.Setting]; known {
				where := setting(se.Setting, se.Value)
				if se.Secret { // named, not repeated
					where = "-" + se.Setting
					if !given[se.Setting] && getenv(envVar[se.Setting]) != "" {
						where = envVar[se.Setting]
					}
				}
				return s, fmt.Errorf("%s: %s", where, se.Problem)
			}
		}
		return s, err
	}
	return s, nil
}

// checkAddr refuses an address that is not host:port with a port from 0 to 65535 (a service's
// may be a name that resolves to many copies: only its form is checked).
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want 0 to 65535", port)
	}
	return nil
}
