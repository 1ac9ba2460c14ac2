package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the binary, read from the environment by loadConfig only.
type config struct {
	DatabaseURL    string
	EventStoreURL  string
	DataDir        string
	CommandAddr    string
	LogLevel       string
	ShutdownGrace  time.Duration
	MaxBodyBytes   int64
	CommandCache   int
	IdempotencyTTL time.Duration
	AutoMigrate    bool

	// NATS. An empty NATSURLs starts an embedded server.
	NATSURLs          []string
	NATSCreds         string
	NATSTLSCA         string
	NATSTLSCert       string
	NATSTLSKey        string
	NATSEmbeddedPort  int
	NATSSyncInterval  time.Duration
	NATSSyncAlways    bool
	NATSStream        string
	NATSSubjectPrefix string
	NATSReplicas      int
	NATSDuplicates    time.Duration
	NATSMaxAge        time.Duration
	NATSMaxBytes      int64

	RelayAddr        string
	RelayMaxInFlight int

	NATSPartitions         int
	ProjectorMaxPartitions int
	QueryAddr              string
	AdminAddr              string

	// Search. Empty ElasticsearchURLs: PostgreSQL full-text search.
	ElasticsearchURLs   []string
	ElasticsearchPrefix string
}

// validIndexPrefix is what Elasticsearch index names allow, more strictly.
var validIndexPrefix = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}$`)

// loadConfig reads the environment through getenv and validates it, reporting every problem at once.
func loadConfig(getenv func(string) string) (config, error) {
	var errs []error
	str := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 10s", name, v))
		}
		return d
	}
	integer := func(name string, def int64) int64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", name, v))
		}
		return n
	}
	nonNegative := func(name string, def int64) int64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want 0 or a positive integer", name, v))
		}
		return n
	}
	boolean := func(name string, def bool) bool {
		v := getenv(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
		}
		return b
	}

	c := config{
		DatabaseURL:    getenv("DATABASE_URL"),
		EventStoreURL:  getenv("EVENTSTORE_URL"),
		DataDir:        str("STRATA_DATA_DIR", ".data"),
		CommandAddr:    str("COMMAND_ADDR", ":8080"),
		LogLevel:       str("LOG_LEVEL", "info"),
		ShutdownGrace:  dur("SHUTDOWN_GRACE", 10*time.Second),
		MaxBodyBytes:   integer("COMMAND_MAX_BODY", 1<<20),
		CommandCache:   int(nonNegative("COMMAND_CACHE_SIZE", 10_000)),
		IdempotencyTTL: dur("IDEMPOTENCY_KEY_TTL", 24*time.Hour),
		AutoMigrate:    boolean("AUTO_MIGRATE", true),

		NATSCreds:         getenv("NATS_CREDS"),
		NATSTLSCA:         getenv("NATS_TLS_CA"),
		NATSTLSCert:       getenv("NATS_TLS_CERT"),
		NATSTLSKey:        getenv("NATS_TLS_KEY"),
		NATSEmbeddedPort:  int(integer("NATS_EMBEDDED_PORT", 4222)),
		NATSSyncAlways:    boolean("NATS_SYNC_ALWAYS", false),
		NATSStream:        str("NATS_STREAM", "STRATA_EVENTS"),
		NATSSubjectPrefix: str("NATS_SUBJECT_PREFIX", "strata"),
		NATSDuplicates:    dur("NATS_DUPLICATE_WINDOW", 10*time.Minute),
		NATSMaxAge:        dur("NATS_MAX_AGE", 7*24*time.Hour),
		RelayAddr:         str("RELAY_ADDR", ":8083"),
		RelayMaxInFlight:  int(integer("RELAY_MAX_IN_FLIGHT", 4096)),
		NATSPartitions:    int(integer("NATS_PARTITIONS", 8)),
		QueryAddr:         str("QUERY_ADDR", ":8081"),
		AdminAddr:         str("ADMIN_ADDR", ":8082"),

		ElasticsearchPrefix: str("ELASTICSEARCH_INDEX_PREFIX", "strata"),

		// 0: every partition, the server's sync interval, no size limit.
		ProjectorMaxPartitions: int(integer("PROJECTOR_MAX_PARTITIONS", 0)),
		NATSSyncInterval:       dur("NATS_SYNC_INTERVAL", 0),
		NATSMaxBytes:           integer("NATS_MAX_BYTES", 0),
	}
	for _, u := range strings.Split(getenv("NATS_URL"), ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.NATSURLs = append(c.NATSURLs, u)
		}
	}
	for _, u := range strings.Split(getenv("ELASTICSEARCH_URL"), ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("ELASTICSEARCH_URL: %q is not a URL such as http://host:9200", u))
		}
		c.ElasticsearchURLs = append(c.ElasticsearchURLs, u)
	}
	if !validIndexPrefix.MatchString(c.ElasticsearchPrefix) {
		errs = append(errs, fmt.Errorf("ELASTICSEARCH_INDEX_PREFIX=%q: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", c.ElasticsearchPrefix))
	}
	// One replica on the embedded server; a cluster keeps three copies unless told otherwise.
	defaultReplicas := int64(1)
	if len(c.NATSURLs) > 0 {
		defaultReplicas = 3
	}
	c.NATSReplicas = int(integer("NATS_REPLICAS", defaultReplicas))
	if c.NATSReplicas > 5 {
		errs = append(errs, fmt.Errorf("NATS_REPLICAS=%d: JetStream allows at most 5", c.NATSReplicas))
	}
	for _, u := range c.NATSURLs {
		if pu, err := url.Parse(u); err != nil || pu.Host == "" {
			errs = append(errs, fmt.Errorf("NATS_URL: %q is not a URL such as nats://host:4222", u))
		}
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY go together"))
	}
	if strings.ContainsAny(c.NATSSubjectPrefix, " .*>") {
		errs = append(errs, fmt.Errorf("NATS_SUBJECT_PREFIX=%q: one subject token, without '.', '*', '>' or spaces", c.NATSSubjectPrefix))
	}
	for name, addr := range map[string]string{"RELAY_ADDR": c.RelayAddr, "QUERY_ADDR": c.QueryAddr, "ADMIN_ADDR": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want host:port or :port", name, addr))
		}
	}
	if c.NATSPartitions > 1024 {
		errs = append(errs, fmt.Errorf("NATS_PARTITIONS=%d: at most 1024", c.NATSPartitions))
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is required (make run starts a local PostgreSQL and sets it)"))
	} else if err := checkPostgresURL(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("DATABASE_URL: %w", err))
	}
	if c.EventStoreURL == "" {
		c.EventStoreURL = c.DatabaseURL
	} else if u, err := url.Parse(c.EventStoreURL); err != nil {
		errs = append(errs, errors.New("EVENTSTORE_URL: not a URL"))
	} else {
		switch u.Scheme {
		case "postgres", "postgresql":
		case "esdb", "esdb+discover":
		default:
			errs = append(errs, fmt.Errorf("EVENTSTORE_URL: scheme %q: want postgres:// or esdb://", u.Scheme))
		}
	}
	if _, _, err := net.SplitHostPort(c.CommandAddr); err != nil {
		errs = append(errs, fmt.Errorf("COMMAND_ADDR=%q: want host:port or :port", c.CommandAddr))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel))
	}
	return c, errors.Join(errs...)
}

// eventStoreIsESDB reports whether EVENTSTORE_URL names an EventStoreDB server.
func (c config) eventStoreIsESDB() bool {
	return strings.HasPrefix(c.EventStoreURL, "esdb://") || strings.HasPrefix(c.EventStoreURL, "esdb+discover://")
}

func checkPostgresURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q: want postgres://", u.Scheme)
	}
	return nil
}
