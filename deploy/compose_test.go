// Package deploy holds strata's deployment files: the Dockerfile, the compose topology's
// configuration under compose/, and the scripts of the development machine. Its only Go code is
// this test, which validates ../docker-compose.yml without Docker and without a network: the file
// is loaded by the Compose Specification's reference loader (compose-go), with schema validation,
// interpolation and its consistency checks, and the topology is then checked against what strata
// needs: the services, the NATS cluster's routes, the dependencies, and every environment variable
// a strata service sets being one that cmd/strata documents.
package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// strataServices maps each strata service of the compose file to the arguments of the strata binary
// it runs.
var strataServices = map[string][]string{
	"migrate":   {"migrate", "schema"},
	"command":   {"command"},
	"relay":     {"relay"},
	"projector": {"projector"},
	"query":     {"query"},
	"admin":     {"admin"},
}

// usesNATS are the strata services that connect to JetStream (cmd/strata's needsNATS).
var usesNATS = []string{"relay", "projector", "admin"}

// listeners are the strata services' listener variables and the ports the compose file publishes.
var listeners = map[string]struct {
	env  string
	port string
}{
	"command": {"COMMAND_ADDR", "8080"},
	"query":   {"QUERY_ADDR", "8081"},
	"admin":   {"ADMIN_ADDR", "8082"},
	"relay":   {"RELAY_ADDR", ""}, // two replicas: health and metrics stay inside the network
}

// replicas are the strata services that run more than once.
var replicas = map[string]int{"relay": 2, "projector": 2}

// pendingEnv are variables the compose file sets for an adapter that has not landed yet, so
// cmd/strata does not read them. An entry must go once cmd/strata/doc.go documents the variable.
var pendingEnv = map[string]string{}

// repoRoot is the module's root, where docker-compose.yml lives.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	require.NoError(t, err)
	return dir
}

// loadCompose loads dir/docker-compose.yml as `docker compose config` would, with env as the only
// environment for interpolation: schema validation, interpolation, normalization and compose-go's
// consistency checks (unknown services in depends_on, undefined networks, …) all on.
func loadCompose(ctx context.Context, dir string, env map[string]string) (*types.Project, error) {
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: types.Mapping(maps.Clone(env)),
	}
	if details.Environment == nil {
		details.Environment = types.Mapping{}
	}
	return loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.SkipValidation = false
		o.SkipInterpolation = false
		o.SkipConsistencyCheck = false
		o.ResolvePaths = true
	})
}

// composeVariables returns the ${VARIABLES} dir/docker-compose.yml interpolates, read before
// interpolation.
func composeVariables(ctx context.Context, dir string) (map[string]template.Variable, error) {
	model, err := loader.LoadModelWithContext(ctx, types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SkipInterpolation = true
		o.SkipValidation = true
		o.SkipNormalization = true
		o.ResolvePaths = false
	})
	if err != nil {
		return nil, err
	}
	return template.ExtractVariables(model, template.DefaultPattern), nil
}

// strataDoc is what cmd/strata/doc.go documents.
type strataDoc struct {
	vars        map[string]bool // environment variables
	subcommands [][]string      // "strata <args>" lines, without "strata"
}

var (
	// "//\tNAME  text" and "//\tA, B, C   text": the variable list of cmd/strata/doc.go.
	docVarLine = regexp.MustCompile(`^//\t([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*)(?:\s|$)`)
	// "//\tstrata migrate schema    text": two spaces end the subcommand.
	docCmdLine = regexp.MustCompile(`^//\tstrata ((?:[a-z|]+ ?)+?)(?:\s{2,}|$)`)
)

func readStrataDoc(t *testing.T) strataDoc {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "cmd", "strata", "doc.go"))
	require.NoError(t, err)
	defer f.Close()
	doc := strataDoc{vars: map[string]bool{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := docVarLine.FindStringSubmatch(line); m != nil {
			for _, name := range strings.Split(m[1], ", ") {
				doc.vars[name] = true
			}
		}
		if m := docCmdLine.FindStringSubmatch(line); m != nil {
			doc.subcommands = append(doc.subcommands, strings.Fields(m[1]))
		}
	}
	require.NoError(t, sc.Err())
	// Guard the parser itself: were it to find nothing, every variable would be reported, but a
	// parser that found only part of the list would let some typos through silently.
	for _, name := range []string{"DATABASE_URL", "EVENTSTORE_URL", "NATS_URL", "NATS_TLS_KEY", "AUTO_MIGRATE"} {
		require.Truef(t, doc.vars[name], "cmd/strata/doc.go: %s not found; has the variable list's format changed?", name)
	}
	require.NotEmpty(t, doc.subcommands, "cmd/strata/doc.go: no `strata <subcommand>` lines found")
	return doc
}

// documents reports whether doc lists the subcommand args (e.g. "migrate schema", or "dlq list"
// from "dlq list|retry|skip").
func (d strataDoc) documents(args []string) bool {
	for _, sub := range d.subcommands {
		if len(sub) != len(args) {
			continue
		}
		match := true
		for i, word := range sub {
			if !slices.Contains(strings.Split(word, "|"), args[i]) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestComposeFile(t *testing.T) {
	dir := repoRoot(t)
	doc := readStrataDoc(t)
	p, err := loadCompose(t.Context(), dir, nil)
	require.NoError(t, err, "docker-compose.yml does not load")
	for _, err := range checkTopology(p, doc) {
		t.Error(err)
	}
	for name, why := range pendingEnv {
		if doc.vars[name] {
			t.Errorf("cmd/strata/doc.go now documents %s: drop it from pendingEnv (%s)", name, why)
		}
	}
	t.Logf("%d services checked: %s", len(p.Services), strings.Join(slices.Sorted(maps.Keys(p.Services)), ", "))
}

// TestComposeInterpolation: every variable the file takes from the environment has a default, so
// `docker compose up` needs no .env file, and the values given do reach the services.
func TestComposeInterpolation(t *testing.T) {
	dir := repoRoot(t)
	vars, err := composeVariables(t.Context(), dir)
	require.NoError(t, err)
	for name, v := range vars {
		if v.DefaultValue == "" && !v.Required {
			t.Errorf("${%s} has no default: write ${%s:-value}, or ${%s:?message} if it must be set", name, name, name)
		}
	}

	p, err := loadCompose(t.Context(), dir, map[string]string{"LOG_LEVEL": "debug"})
	require.NoError(t, err)
	for name := range strataServices {
		s, ok := p.Services[name]
		if !ok {
			continue // TestComposeFile reports it
		}
		if got := envValue(s, "LOG_LEVEL"); got != "debug" {
			t.Errorf("%s: LOG_LEVEL=%q with LOG_LEVEL=debug in the environment", name, got)
		}
	}
}

// TestComposeChecksCatchMistakes runs the same loading and checks on copies of the compose files,
// each with one mistake, and expects each to be reported: a check that cannot fail proves nothing.
func TestComposeChecksCatchMistakes(t *testing.T) {
	root := repoRoot(t)
	doc := readStrataDoc(t)
	files := []string{"docker-compose.yml", "deploy/Dockerfile"}
	confs, err := filepath.Glob(filepath.Join(root, "deploy", "compose", "*"))
	require.NoError(t, err)
	for _, c := range confs {
		rel, err := filepath.Rel(root, c)
		require.NoError(t, err)
		files = append(files, filepath.ToSlash(rel))
	}

	cases := []struct {
		name, file, old, new string
		want                 string // a substring of the error that must be reported
	}{
		{"a misspelt variable", "docker-compose.yml", `COMMAND_ADDR: ":8080"`, `COMAND_ADDR: ":8080"`, "COMAND_ADDR"},
		{"a misspelt shared variable", "docker-compose.yml", `NATS_REPLICAS: "3"`, `NATS_REPLICA: "3"`, "NATS_REPLICA"},
		{"an unknown attribute", "docker-compose.yml", "  stop_grace_period: 15s\n", "  stop_grace_period: 15s\n  restart_policy: always\n", "restart_policy"},
		{"a dependency on a missing service", "docker-compose.yml", "  eventstore: { condition: service_healthy }", "  eventstor: { condition: service_healthy }", "eventstor"},
		{"another Dockerfile", "docker-compose.yml", "dockerfile: deploy/Dockerfile", "dockerfile: Dockerfile", "deploy/Dockerfile"},
		{"a missing config file", "docker-compose.yml", "./deploy/compose/nats-2.conf:", "./deploy/compose/nats-9.conf:", "nats-9.conf"},
		{"a missing route", "deploy/compose/nats-1.conf", "    nats-route://nats-3:6222\n", "", "nats-3"},
		{"a route to itself", "deploy/compose/nats-2.conf", "nats-route://nats-3:6222", "nats-route://nats-2:6222", "nats-2"},
		{"a node name twice", "deploy/compose/nats-3.conf", "server_name: nats-3", "server_name: nats-1", "server_name"},
		{"a node without JetStream", "deploy/compose/nats-1.conf", "jetstream {\n", "jetstream {\n  enabled: false\n", "JetStream is not enabled"},
		{"a store off the volume", "deploy/compose/nats-2.conf", "store_dir: /data", "store_dir: /tmp/jetstream", "store_dir"},
		{"a misspelt NATS setting", "deploy/compose/nats-3.conf", "server_name: nats-3", "server_nam: nats-3", "server_nam"},
		{"a NATS node left out of NATS_URL", "docker-compose.yml", ",nats://nats-3:4222", "", "NATS_URL"},
		{"a migration at start-up", "docker-compose.yml", `AUTO_MIGRATE: "false"`, `AUTO_MIGRATE: "true"`, "AUTO_MIGRATE"},
		{"a wrong published port", "docker-compose.yml", `"127.0.0.1:8081:8081"`, `"127.0.0.1:8081:8080"`, "8081"},
		{"a service that no longer waits for migrate", "docker-compose.yml", "  migrate: { condition: service_completed_successfully }", "  migrate: { condition: service_started }", "migrate"},
		{"a healthy condition on a service without healthcheck", "docker-compose.yml", "8081:8081\"\n    depends_on:\n      <<: [*strata-depends, *search-depends]\n", "8081:8081\"\n    depends_on:\n      <<: [*strata-depends, *search-depends]\n      command: { condition: service_healthy }\n", "healthcheck"},
		{"a single relay", "docker-compose.yml", "    command: [\"relay\"]\n    deploy:\n      replicas: 2", "    command: [\"relay\"]\n    deploy:\n      replicas: 1", "replicas"},
		{"partitions left unconsumed", "docker-compose.yml", `PROJECTOR_MAX_PARTITIONS: "4"`, `PROJECTOR_MAX_PARTITIONS: "3"`, "PROJECTOR_MAX_PARTITIONS"},
		{"a variable without default", "docker-compose.yml", "${LOG_LEVEL:-info}", "${LOG_LEVEL}", "LOG_LEVEL"},
		{"an undocumented subcommand", "docker-compose.yml", `command: ["query"]`, `command: ["queries"]`, "queries"},
		{"the event store on PostgreSQL", "docker-compose.yml", "EVENTSTORE_URL: esdb://eventstore:2113?tls=false", "EVENTSTORE_URL: postgres://strata:strata@postgres:5432/strata", "EVENTSTORE_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join(root, f))
				require.NoError(t, err)
				if f == tc.file {
					require.Equalf(t, 1, strings.Count(string(data), tc.old), "%s: %q must occur once; update this case", f, tc.old)
					data = []byte(strings.Replace(string(data), tc.old, tc.new, 1))
				}
				require.NoError(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
			}

			var problems []error
			// LOG_LEVEL given, so that the case without a default reports without logrus warnings.
			if p, err := loadCompose(t.Context(), dir, map[string]string{"LOG_LEVEL": "info"}); err != nil {
				problems = append(problems, err)
			} else {
				problems = checkTopology(p, doc)
			}
			if vars, err := composeVariables(t.Context(), dir); err == nil {
				for name, v := range vars {
					if v.DefaultValue == "" && !v.Required {
						problems = append(problems, fmt.Errorf("${%s} has no default", name))
					}
				}
			}
			joined := errors.Join(problems...)
			require.Error(t, joined, "the mistake went unnoticed")
			require.Contains(t, joined.Error(), tc.want)
			t.Logf("reported: %v", joined)
		})
	}
}

// checkTopology returns every way p differs from the topology strata needs.
func checkTopology(p *types.Project, doc strataDoc) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// Services.
	for _, name := range slices.Concat([]string{"postgres", "eventstore", "elasticsearch"}, slices.Sorted(maps.Keys(strataServices))) {
		if _, ok := p.Services[name]; !ok {
			fail("service %s is missing", name)
		}
	}
	natsNodes := servicesWithImage(p, "nats")
	if len(natsNodes) != 3 {
		fail("want a three-node NATS cluster, found NATS services %v", natsNodes)
	}
	checkImage(p, "postgres", "postgres", "15", fail)
	checkImage(p, "eventstore", "eventstore/eventstore", "", fail)
	checkImage(p, "elasticsearch", "docker.elastic.co/elasticsearch/elasticsearch", "8.", fail)
	for _, n := range natsNodes {
		tag := imageTag(p.Services[n].Image)
		if !atLeast(tag, 2, 11) {
			fail("%s: image %s: want nats:2.11 or newer", n, p.Services[n].Image)
		}
	}

	// Dependencies: every target exists, a service_healthy target has a healthcheck, a
	// service_completed_successfully target runs once.
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		for _, dep := range slices.Sorted(maps.Keys(s.DependsOn)) {
			cond := s.DependsOn[dep].Condition
			target, ok := p.Services[dep]
			if !ok {
				fail("%s depends on %s, which is not a service", name, dep)
				continue
			}
			switch cond {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0 {
					fail("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != "" && target.Restart != types.RestartPolicyNo {
					fail("%s waits for %s to complete, but %s restarts (%s)", name, dep, dep, target.Restart)
				}
			}
		}
	}
	for _, name := range []string{"postgres", "eventstore", "elasticsearch"} {
		if s, ok := p.Services[name]; ok && (s.HealthCheck == nil || len(s.HealthCheck.Test) == 0) {
			fail("%s has no healthcheck", name)
		}
	}

	// PostgreSQL, EventStoreDB, Elasticsearch settings.
	if s, ok := p.Services["postgres"]; ok && !slices.ContainsFunc(s.Command, func(a string) bool {
		return strings.HasPrefix(a, "idle_in_transaction_session_timeout=")
	}) {
		fail("postgres: idle_in_transaction_session_timeout is not set")
	}
	if s, ok := p.Services["eventstore"]; ok {
		for k, want := range map[string]string{"EVENTSTORE_INSECURE": "true", "EVENTSTORE_RUN_PROJECTIONS": "None"} {
			if got := envValue(s, k); got != want {
				fail("eventstore: %s=%q, want %q", k, got, want)
			}
		}
	}
	if s, ok := p.Services["elasticsearch"]; ok {
		for k, want := range map[string]string{"discovery.type": "single-node", "xpack.security.enabled": "false"} {
			if got := envValue(s, k); got != want {
				fail("elasticsearch: %s=%q, want %q", k, got, want)
			}
		}
		if !strings.Contains(envValue(s, "ES_JAVA_OPTS"), "-Xmx") {
			fail("elasticsearch: ES_JAVA_OPTS sets no heap size (-Xmx)")
		}
	}

	// Files the compose file mounts must be in the repository.
	for _, name := range slices.Sorted(maps.Keys(p.Configs)) {
		c := p.Configs[name]
		if c.File == "" {
			continue
		}
		if !inside(p.WorkingDir, c.File) {
			fail("config %s: %s is outside the repository", name, c.File)
		} else if _, err := os.Stat(c.File); err != nil {
			fail("config %s: %v", name, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, v := range p.Services[name].Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if !inside(p.WorkingDir, v.Source) {
				fail("%s: bind mount %s is outside the repository", name, v.Source)
			} else if _, err := os.Stat(v.Source); err != nil {
				fail("%s: bind mount: %v", name, err)
			}
		}
		for _, c := range p.Services[name].Configs {
			if _, ok := p.Configs[c.Source]; !ok {
				fail("%s: config %s is not defined", name, c.Source)
			}
		}
	}

	errs = append(errs, checkStrata(p, doc, natsNodes)...)
	errs = append(errs, checkNATS(p, natsNodes)...)
	return errs
}

// checkStrata checks strata's own services: the build, the subcommand, the environment, the
// dependencies and the published listeners.
func checkStrata(p *types.Project, doc strataDoc, natsNodes []string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	dockerfile := filepath.Join(p.WorkingDir, "deploy", "Dockerfile")
	if _, err := os.Stat(dockerfile); err != nil {
		fail("deploy/Dockerfile: %v", err)
	}

	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if _, ok := strataServices[name]; !ok && p.Services[name].Build != nil {
			fail("%s is built here but is not one of strata's services %v: add it to strataServices so that it is checked", name, slices.Sorted(maps.Keys(strataServices)))
		}
	}

	shared := map[string]map[string]string{} // variable -> service -> value, for those that must agree
	for _, name := range slices.Sorted(maps.Keys(strataServices)) {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		longRunning := name != "migrate"

		// Build: the repository as context, deploy/Dockerfile.
		if s.Build == nil {
			fail("%s: no build: strata's services are built from deploy/Dockerfile", name)
		} else {
			df := s.Build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(s.Build.Context, df)
			}
			if filepath.Clean(s.Build.Context) != filepath.Clean(p.WorkingDir) || filepath.Clean(df) != dockerfile {
				fail("%s: built from %s with context %s, want deploy/Dockerfile with the repository as context", name, s.Build.Dockerfile, s.Build.Context)
			}
		}
		if want := strataServices[name]; !slices.Equal(s.Command, want) {
			fail("%s: runs strata %v, want strata %v", name, []string(s.Command), want)
		}
		if len(s.Command) > 0 && !doc.documents(s.Command) {
			fail("%s: `strata %s` is not a subcommand cmd/strata/doc.go documents", name, strings.Join(s.Command, " "))
		}
		if len(s.Entrypoint) > 0 {
			fail("%s: overrides the image's entrypoint (/strata)", name)
		}

		// Environment: only variables cmd/strata reads; the ones every service needs.
		for _, k := range slices.Sorted(maps.Keys(s.Environment)) {
			if !doc.vars[k] && pendingEnv[k] == "" {
				fail("%s: environment variable %s is not one cmd/strata reads (cmd/strata/doc.go lists them)", name, k)
			}
		}
		required := []string{"DATABASE_URL", "EVENTSTORE_URL"}
		if longRunning {
			required = append(required, "NATS_URL", "NATS_REPLICAS", "ELASTICSEARCH_URL")
		}
		for _, k := range required {
			if envValue(s, k) == "" {
				fail("%s: %s is not set", name, k)
			}
		}
		if longRunning && envValue(s, "AUTO_MIGRATE") != "false" {
			fail("%s: AUTO_MIGRATE=%q: the migrate service applies the schema, so the long-running services set AUTO_MIGRATE=false", name, envValue(s, "AUTO_MIGRATE"))
		}
		for _, k := range []string{"DATABASE_URL", "EVENTSTORE_URL", "NATS_URL", "NATS_REPLICAS", "NATS_PARTITIONS", "NATS_STREAM", "NATS_SUBJECT_PREFIX", "ELASTICSEARCH_URL"} {
			if v, ok := s.Environment[k]; ok && (longRunning || k == "DATABASE_URL" || k == "EVENTSTORE_URL") {
				if shared[k] == nil {
					shared[k] = map[string]string{}
				}
				shared[k][name] = deref(v)
			}
		}

		// Dependencies.
		want := map[string]string{"postgres": types.ServiceConditionHealthy}
		if longRunning {
			want["migrate"] = types.ServiceConditionCompletedSuccessfully
			want["eventstore"] = types.ServiceConditionHealthy
			if slices.Contains(usesNATS, name) {
				for _, n := range natsNodes {
					want[n] = types.ServiceConditionHealthy
				}
			}
		}
		for _, dep := range slices.Sorted(maps.Keys(want)) {
			if got, ok := s.DependsOn[dep]; !ok || got.Condition != want[dep] {
				fail("%s: want depends_on %s with condition %s, have %+v", name, dep, want[dep], s.DependsOn[dep])
			}
		}

		// Listeners and published ports.
		if l, ok := listeners[name]; ok {
			_, port, err := net.SplitHostPort(envValue(s, l.env))
			if err != nil {
				fail("%s: %s=%q: want :port", name, l.env, envValue(s, l.env))
			}
			if l.port != "" && !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
				return pc.Published == l.port && strconv.Itoa(int(pc.Target)) == port
			}) {
				fail("%s: want port %s published to its listener %s=%q, have %+v", name, l.port, l.env, envValue(s, l.env), s.Ports)
			}
		}
		if n, ok := replicas[name]; ok {
			if s.Deploy == nil || s.Deploy.Replicas == nil || *s.Deploy.Replicas != n {
				fail("%s: want deploy.replicas: %d", name, n)
			} else if len(s.Ports) > 0 {
				fail("%s: %d replicas cannot publish the same host port", name, n)
			}
		}
	}

	// Values every strata service must agree on.
	for _, k := range slices.Sorted(maps.Keys(shared)) {
		if vals := slices.Compact(slices.Sorted(maps.Values(shared[k]))); len(vals) > 1 {
			fail("strata services disagree on %s: %v", k, shared[k])
		}
	}
	one := func(k string) string {
		for _, v := range shared[k] {
			return v
		}
		return ""
	}

	// The URLs name services of this file, with the right settings.
	if v := one("DATABASE_URL"); v != "" {
		if u, err := url.Parse(v); err != nil {
			fail("DATABASE_URL: %v", err)
		} else if pg, ok := p.Services[u.Hostname()]; !ok || !strings.HasPrefix(pg.Image, "postgres:") {
			fail("DATABASE_URL: host %s is not the postgres service", u.Hostname())
		} else {
			pass, _ := u.User.Password()
			if u.User.Username() != envValue(pg, "POSTGRES_USER") || pass != envValue(pg, "POSTGRES_PASSWORD") ||
				strings.TrimPrefix(u.Path, "/") != envValue(pg, "POSTGRES_DB") || u.Port() != "5432" {
				fail("DATABASE_URL %s does not match the %s service's user, password and database", v, u.Hostname())
			}
		}
	}
	if v := one("EVENTSTORE_URL"); v != "" {
		if u, err := url.Parse(v); err != nil || u.Scheme != "esdb" {
			fail("EVENTSTORE_URL=%q: want esdb://eventstore:2113?tls=false", v)
		} else if es, ok := p.Services[u.Hostname()]; !ok || !strings.HasPrefix(es.Image, "eventstore/") {
			fail("EVENTSTORE_URL: host %s is not the eventstore service", u.Hostname())
		} else if u.Query().Get("tls") != "false" {
			fail("EVENTSTORE_URL=%q: the local server is insecure; want tls=false", v)
		}
	}
	if v := one("ELASTICSEARCH_URL"); v != "" {
		if u, err := url.Parse(v); err != nil {
			fail("ELASTICSEARCH_URL: %v", err)
		} else if _, ok := p.Services[u.Hostname()]; !ok {
			fail("ELASTICSEARCH_URL: host %s is not a service", u.Hostname())
		}
	}
	if v := one("NATS_REPLICAS"); v != strconv.Itoa(len(natsNodes)) {
		fail("NATS_REPLICAS=%q with %d NATS nodes", v, len(natsNodes))
	}

	// Every partition of the events stream has a consumer: the projector replicas together take
	// at least NATS_PARTITIONS (default 8).
	if s, ok := p.Services["projector"]; ok && s.Deploy != nil && s.Deploy.Replicas != nil {
		partitions := 8
		if v := envValue(s, "NATS_PARTITIONS"); v != "" {
			partitions, _ = strconv.Atoi(v)
		}
		if v := envValue(s, "PROJECTOR_MAX_PARTITIONS"); v != "" {
			most, err := strconv.Atoi(v)
			if err != nil || most*(*s.Deploy.Replicas) < partitions {
				fail("projector: %d replicas × PROJECTOR_MAX_PARTITIONS=%s leave some of the %d partitions without a consumer", *s.Deploy.Replicas, v, partitions)
			}
		}
	}
	return errs
}

// checkNATS checks the cluster: each node's configuration file, parsed by nats-server itself,
// has a distinct name and JetStream on a volume of its own, and routes to each other node; the
// strata services' NATS_URL lists every node.
func checkNATS(p *types.Project, nodes []string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	opts := map[string]*server.Options{}
	for _, n := range nodes {
		s := p.Services[n]
		i := slices.Index(s.Command, "--config")
		if i < 0 || i+1 >= len(s.Command) {
			fail("%s: command %v does not name a --config file", n, []string(s.Command))
			continue
		}
		target := s.Command[i+1]
		file := ""
		for _, c := range s.Configs {
			if c.Target == target {
				file = p.Configs[c.Source].File
			}
		}
		for _, v := range s.Volumes {
			if v.Target == target && v.Type == types.VolumeTypeBind {
				file = v.Source
			}
		}
		if file == "" {
			fail("%s: nothing is mounted at %s, its --config", n, target)
			continue
		}
		o, err := server.ProcessConfigFile(file)
		if err != nil {
			fail("%s: %s: %v", n, file, err)
			continue
		}
		opts[n] = o

		if !o.JetStream {
			fail("%s: %s: JetStream is not enabled", n, file)
		}
		var volume string
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume && inside(v.Target, o.StoreDir) {
				volume = v.Source
			}
		}
		if volume == "" {
			fail("%s: the JetStream store_dir %q is not on a named volume", n, o.StoreDir)
		}
		for _, other := range nodes {
			if other == n {
				continue
			}
			for _, v := range p.Services[other].Volumes {
				if v.Type == types.VolumeTypeVolume && v.Source == volume {
					fail("%s and %s share the volume %s", n, other, volume)
				}
			}
		}
		if s.HealthCheck == nil || !slices.ContainsFunc(s.HealthCheck.Test, func(a string) bool {
			return strings.Contains(a, fmt.Sprintf(":%d/healthz", o.HTTPPort))
		}) {
			fail("%s: the healthcheck does not ask /healthz on the monitoring port %d", n, o.HTTPPort)
		}
	}
	if len(opts) != len(nodes) {
		return errs
	}

	names := map[string]string{}
	for _, n := range nodes {
		o := opts[n]
		if o.ServerName == "" {
			fail("%s: no server_name", n)
		} else if prev, ok := names[o.ServerName]; ok {
			fail("%s and %s have the same server_name %q", prev, n, o.ServerName)
		}
		names[o.ServerName] = n
		if o.Cluster.Name != opts[nodes[0]].Cluster.Name || o.Cluster.Name == "" {
			fail("%s: cluster name %q, want one name on every node (%s has %q)", n, o.Cluster.Name, nodes[0], opts[nodes[0]].Cluster.Name)
		}

		var want, got []string
		for _, other := range nodes {
			if other != n {
				want = append(want, net.JoinHostPort(other, strconv.Itoa(opts[other].Cluster.Port)))
			}
		}
		for _, r := range o.Routes {
			got = append(got, r.Host)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			fail("%s: routes %v, want exactly the other nodes' cluster ports %v", n, got, want)
		}
	}

	var want []string
	for _, n := range nodes {
		want = append(want, "nats://"+net.JoinHostPort(n, strconv.Itoa(opts[n].Port)))
	}
	for _, name := range slices.Sorted(maps.Keys(strataServices)) {
		s, ok := p.Services[name]
		if !ok || !slices.Contains(usesNATS, name) {
			continue
		}
		got := strings.Split(envValue(s, "NATS_URL"), ",")
		slices.Sort(got)
		if !slices.Equal(got, want) {
			fail("%s: NATS_URL lists %v, want every node's client port %v", name, got, want)
		}
	}
	return errs
}

func servicesWithImage(p *types.Project, repo string) []string {
	var out []string
	for name, s := range p.Services {
		if r, _, _ := strings.Cut(s.Image, ":"); r == repo {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func checkImage(p *types.Project, service, repo, tagPrefix string, fail func(string, ...any)) {
	s, ok := p.Services[service]
	if !ok {
		return
	}
	r, tag, _ := strings.Cut(s.Image, ":")
	if r != repo || !strings.HasPrefix(tag, tagPrefix) || tag == "" || tag == "latest" {
		fail("%s: image %s, want %s:%s… (a pinned tag)", service, s.Image, repo, tagPrefix)
	}
}

func imageTag(image string) string {
	_, tag, _ := strings.Cut(image, ":")
	return tag
}

// atLeast reports whether the image tag (e.g. 2.11-alpine) is version major.minor or newer.
func atLeast(tag string, major, minor int) bool {
	v, _, _ := strings.Cut(tag, "-")
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (ma > major || ma == major && mi >= minor)
}

func envValue(s types.ServiceConfig, k string) string {
	return deref(s.Environment[k])
}

func deref(v *string) string {
	if v == nil {
		return ""
	}
	return *v
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// TestDockerignore: the build context is the repository, so the Dockerfile's ignore file must keep
// the local state (.data: the dev PostgreSQL cluster, gigabytes) and .git out of it.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "Dockerfile.dockerignore"))
	require.NoError(t, err)
	lines := strings.Split(string(data), "\n")
	for _, want := range []string{".data", ".git"} {
		require.Containsf(t, lines, want, "deploy/Dockerfile.dockerignore must exclude %s", want)
	}
}
