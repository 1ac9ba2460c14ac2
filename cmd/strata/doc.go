// Command strata runs strata's services and operator tasks. One binary, subcommands:
//
//	strata dev               every service in one process on embedded defaults (make run)
//	strata command           the REST command service
//	strata relay             the relay from the event store to NATS JetStream
//	strata projector         the projectors that keep the read models and search models
//	strata query             the REST query service, search included
//	strata admin             the admin API
//	strata projections list  projection status: checkpoint, lag, dead letters
//	strata dlq list|retry|skip   the dead-letter store
//	strata bench             paced load against running command and query services
//	strata migrate schema    create or update the PostgreSQL schemas, then exit
//
// Configuration comes from environment variables, all validated at start-up, every problem reported
// at once:
//
//	DATABASE_URL          PostgreSQL for the command service's tables and read models (required)
//	EVENTSTORE_URL        event store: postgres://… (default: DATABASE_URL) or esdb://… (EventStoreDB)
//	STRATA_DATA_DIR       directory for local state (default .data)
//	COMMAND_ADDR          command service listener (default :8080)
//	QUERY_ADDR            query service listener (default :8081)
//	ADMIN_ADDR            admin API listener (default :8082)
//	LOG_LEVEL             debug, info, warn or error (default info)
//	SHUTDOWN_GRACE        time in-flight requests get on shutdown (default 10s)
//	COMMAND_MAX_BODY      request body limit in bytes (default 1048576)
//	COMMAND_CACHE_SIZE    aggregate states the command service keeps in memory; 0 disables (default 10000)
//	IDEMPOTENCY_KEY_TTL   how long Idempotency-Key responses are kept (default 24h)
//	AUTO_MIGRATE          apply schema migrations at start-up (default true)
//	NATS_URL              NATS servers, comma-separated; empty starts an embedded server
//	NATS_CREDS            NATS credentials file
//	NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY   TLS for NATS
//	NATS_EMBEDDED_PORT    client port of the embedded server, on 127.0.0.1 (default 4222)
//	NATS_SYNC_INTERVAL    how often the embedded server fsyncs JetStream (default: the server's, 2m)
//	NATS_SYNC_ALWAYS      fsync every JetStream write on the embedded server (default false)
//	NATS_STREAM           the events stream (default STRATA_EVENTS)
//	NATS_SUBJECT_PREFIX   events go to <prefix>.<aggregate type>.<aggregate id> (default strata)
//	NATS_REPLICAS         stream replicas (default 1 embedded, 3 with NATS_URL)
//	NATS_DUPLICATE_WINDOW JetStream's Nats-Msg-Id deduplication window (default 10m)
//	NATS_MAX_AGE          stream retention by age (default 168h)
//	NATS_MAX_BYTES        stream retention by size in bytes (default unlimited)
//	RELAY_ADDR            relay health and metrics listener (default :8083)
//	RELAY_MAX_IN_FLIGHT   publishes awaiting an ack (default 4096)
//	NATS_PARTITIONS       partitions of the events stream, shared out among projector processes (default 8)
//	PROJECTOR_MAX_PARTITIONS   most partitions one projector process consumes (default all)
//	ELASTICSEARCH_URL     Elasticsearch nodes, comma-separated; empty: PostgreSQL full-text search
//	ELASTICSEARCH_INDEX_PREFIX   start of every index, alias and template name (default strata)
package main
