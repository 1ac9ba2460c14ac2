package migrations

import "embed"

// Elasticsearch holds the Elasticsearch index templates of the search models (search/elasticsearch),
// one file per model and mapping version: elasticsearch/<model>-v<version>.json, the "template" part
// of a composable index template (settings and an explicit, strict mapping). The adapter names the
// templates and the indices after them. Never edit a shipped file: a changed mapping is a new version,
// built beside the old one by a rebuild and switched to by moving the aliases.
//
//go:embed elasticsearch/*.json
var Elasticsearch embed.FS
