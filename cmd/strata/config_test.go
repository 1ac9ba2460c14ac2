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
	require.Equal(t, 10_000, cfg.CommandCache)
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
		"COMMAND_CACHE_SIZE":  "-1",
	}))
	require.Error(t, err)
	for _, name := range []string{"DATABASE_URL", "EVENTSTORE_URL", "COMMAND_ADDR", "LOG_LEVEL", "SHUTDOWN_GRACE",
		"COMMAND_MAX_BODY", "IDEMPOTENCY_KEY_TTL", "AUTO_MIGRATE", "COMMAND_CACHE_SIZE"} {
		require.True(t, strings.Contains(err.Error(), name), "error should name %s:\n%v", name, err)
	}
}

func TestConfigEventStoreDB(t *testing.T) {
	cfg, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db", "EVENTSTORE_URL": "esdb://localhost:2113?tls=false"}))
	require.NoError(t, err)
	require.True(t, cfg.eventStoreIsESDB())
	cfg, err = loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db"}))
	require.NoError(t, err)
	require.False(t, cfg.eventStoreIsESDB())
}

func TestConfigNATS(t *testing.T) {
	cfg, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db"}))
	require.NoError(t, err)
	require.Empty(t, cfg.NATSURLs, "no NATS_URL means the embedded server")
	require.Equal(t, 1, cfg.NATSReplicas)

	cfg, err = loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db", "NATS_URL": "nats://a:4222, nats://b:4222"}))
	require.NoError(t, err)
	require.Equal(t, []string{"nats://a:4222", "nats://b:4222"}, cfg.NATSURLs)
	require.Equal(t, 3, cfg.NATSReplicas, "a cluster keeps three copies by default")

	_, err = loadConfig(env(map[string]string{
		"DATABASE_URL": "postgres://u@h/db", "NATS_URL": "not a url", "NATS_REPLICAS": "7",
		"NATS_TLS_CERT": "cert.pem", "NATS_SUBJECT_PREFIX": "a.b", "RELAY_ADDR": "x",
	}))
	for _, want := range []string{"NATS_URL", "NATS_REPLICAS", "NATS_TLS_CERT", "NATS_SUBJECT_PREFIX", "RELAY_ADDR"} {
		require.ErrorContains(t, err, want)
	}
}

func TestConfigElasticsearch(t *testing.T) {
	cfg, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db"}))
	require.NoError(t, err)
	require.Empty(t, cfg.ElasticsearchURLs, "no ELASTICSEARCH_URL means PostgreSQL full-text search")
	require.Equal(t, "strata", cfg.ElasticsearchPrefix)

	cfg, err = loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u@h/db",
		"ELASTICSEARCH_URL": "http://es1:9200, https://es2:9200", "ELASTICSEARCH_INDEX_PREFIX": "shop"}))
	require.NoError(t, err)
	require.Equal(t, []string{"http://es1:9200", "https://es2:9200"}, cfg.ElasticsearchURLs)
	require.Equal(t, "shop", cfg.ElasticsearchPrefix)

	for _, bad := range []map[string]string{
		{"ELASTICSEARCH_URL": "es1:9200"}, {"ELASTICSEARCH_URL": "ftp://es1"},
		{"ELASTICSEARCH_INDEX_PREFIX": "Shop"}, {"ELASTICSEARCH_INDEX_PREFIX": "_x"}, {"ELASTICSEARCH_INDEX_PREFIX": "a,b"},
	} {
		bad["DATABASE_URL"] = "postgres://u@h/db"
		_, err := loadConfig(env(bad))
		require.Error(t, err, "%v", bad)
	}
}
