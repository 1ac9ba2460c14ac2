package consistency

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// ProgressChannelSQL is the SQL expression that names the PostgreSQL notification channel where
// projectors announce their progress: one channel per schema (a fixed-length digest of its name,
// as channel names are limited to 63 bytes), so that deployments, and tests, that share a database
// in different schemas never take each other's announcements for their own.
const ProgressChannelSQL = `'strata_projection_' || substr(md5(current_schema()), 1, 16)`

// maxProgressPayload keeps a [Progress] within what pg_notify accepts (under 8,000 bytes), with room.
const maxProgressPayload = 7000

// Progress is what a projector announces after a commit, as the payload of a PostgreSQL
// notification: the projection, and the highest version it has committed of each stream since its
// previous announcement. Streams may be empty: then readers must look the versions up, and forget
// whatever they learned of the projection's versions from earlier announcements.
//
// Readers rely on this: every commit that raises a projection's versions is followed by an
// announcement of those versions or by one of the projection's name alone. Whatever changes
// projection_streams outside a projector's announced batches must announce the name alone, as a
// dead letter's retry does; so does a projector when it takes a partition, for the announcements a
// crash may have cost. Lowering a version while readers run breaks the rule (readers may trust a
// higher version they remember for up to a minute): a rebuild must announce the name alone too.
type Progress struct {
	Projection string
	Streams    map[string]uint64
}

// Encode returns one payload: the projection's name alone when there are no streams or they would
// not fit, JSON otherwise. [Progress.Payloads] splits what does not fit.
func (p Progress) Encode() string {
	if len(p.Streams) == 0 {
		return p.Projection
	}
	b, err := json.Marshal(progressJSON(p))
	if err != nil || len(b) > maxProgressPayload {
		return p.Projection
	}
	return string(b)
}

// Payloads returns p as payloads of notifications that each fit: the name alone when there are no
// streams, otherwise the streams split among as many payloads as they need. Readers then keep what
// they know of the projection, which a payload of the name alone would make them forget.
func (p Progress) Payloads() []string {
	if len(p.Streams) == 0 {
		return []string{p.Projection}
	}
	name, _ := json.Marshal(p.Projection) // a string always marshals
	// {"projection":NAME,"streams":{ENTRIES}} with ENTRIES "STREAM":VERSION, separated by commas.
	overhead := len(`{"projection":,"streams":{}}`) + len(name)
	var payloads []string
	chunk := Progress{Projection: p.Projection, Streams: map[string]uint64{}}
	size := overhead
	for _, s := range slices.Sorted(maps.Keys(p.Streams)) {
		key, _ := json.Marshal(s)
		entry := len(key) + 1 + len(strconv.FormatUint(p.Streams[s], 10)) + 1 // with its comma
		if len(chunk.Streams) > 0 && size+entry > maxProgressPayload {
			payloads = append(payloads, chunk.Encode())
			chunk = Progress{Projection: p.Projection, Streams: map[string]uint64{}}
			size = overhead
		}
		chunk.Streams[s] = p.Streams[s]
		size += entry
	}
	// A stream whose name alone is too long makes its chunk the name alone, which is still true.
	return append(payloads, chunk.Encode())
}

// ParseProgress reads a payload of [Progress.Encode]. A payload that is not JSON is a projection's
// name alone; JSON that does not parse yields no projection, which makes readers look at every
// projection.
func ParseProgress(payload string) Progress {
	if !strings.HasPrefix(payload, "{") {
		return Progress{Projection: payload}
	}
	var p progressJSON
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return Progress{}
	}
	return Progress(p)
}

type progressJSON struct {
	Projection string            `json:"projection"`
	Streams    map[string]uint64 `json:"streams"`
}
