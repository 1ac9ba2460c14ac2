package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db"}))
	require.NoError(t, err)
	require.Equal(t, "postgres://u@h/db", cfg.EventStoreURL, "the event store defaults to DATABASE_URL")
	require.Equal(t, ":8080", cfg.CommandAddr)
	require.Equal(t, "info", cfg.LogLevel)
	require.Equal(t, 10*time.Second, cfg.ShutdownGrace)
	require.Equal(t, int64(1<<20), cfg.MaxBodyBytes)
	require.Equal(t, 24*time.Hour, cfg.IdempotencyTTL)
	require.True(t, cfg.AutoMigrate)
}

func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	_, err := loadConfig(env(map[string]string{
		"EVENTSTORE_URL":      "mysql://x",
		"COMMAND_ADDR":        "8080",
		"LOG_LEVEL":           "loud",
		"SHUTDOWN_GRACE":      "-1s",
		"COMMAND_MAX_BODY":    "big",
		"IDEMPOTENCY_KEY_TTL": "forever",
		"AUTO_MIGRATE":        "maybe",
	}))
	require.Error(t, err)
	for _, name := range []string{"DATABASE_URL", "EVENTSTORE_URL", "COMMAND_ADDR", "LOG_LEVEL", "SHUTDOWN_GRACE",
		"COMMAND_MAX_BODY", "IDEMPOTENCY_KEY_TTL", "AUTO_MIGRATE"} {
		require.True(t, strings.Contains(err.Error(), name), "error should name %s:\n%v", name, err)
	}
}

func TestConfigRefusesEventStoreDBUntilItsAdapterExists(t *testing.T) {
	_, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db", "EVENTSTORE_URL": "esdb://localhost:2113"}))
	require.ErrorContains(t, err, "EventStoreDB")
}
