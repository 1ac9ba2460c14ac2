package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
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
	IdempotencyTTL time.Duration
	AutoMigrate    bool
}

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
		IdempotencyTTL: dur("IDEMPOTENCY_KEY_TTL", 24*time.Hour),
		AutoMigrate:    boolean("AUTO_MIGRATE", true),
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
			errs = append(errs, errors.New("EVENTSTORE_URL: the EventStoreDB adapter is not available in this build yet; use postgres://"))
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
