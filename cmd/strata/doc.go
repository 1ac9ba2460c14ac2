// Command strata runs strata's services and operator tasks. One binary, subcommands:
//
//	strata dev               every service in one process on embedded defaults (make run)
//	strata command           the REST command service
//	strata migrate schema    create or update the PostgreSQL schemas, then exit
//
// Configuration comes from environment variables, all validated at start-up, every problem reported
// at once:
//
//	DATABASE_URL          PostgreSQL for the command service's tables and read models (required)
//	EVENTSTORE_URL        event store: postgres://… (default: DATABASE_URL); esdb://… is not yet supported
//	STRATA_DATA_DIR       directory for local state (default .data)
//	COMMAND_ADDR          command service listener (default :8080)
//	LOG_LEVEL             debug, info, warn or error (default info)
//	SHUTDOWN_GRACE        time in-flight requests get on shutdown (default 10s)
//	COMMAND_MAX_BODY      request body limit in bytes (default 1048576)
//	IDEMPOTENCY_KEY_TTL   how long Idempotency-Key responses are kept (default 24h)
//	AUTO_MIGRATE          apply schema migrations at start-up (default true)
package main
