package consistency

import (
	"encoding/json"
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
// previous announcement. Streams may be empty: then readers must look the versions up.
type Progress struct {
	Projection string
	Streams    map[string]uint64
}

// Encode returns the payload: the projection's name alone when there are no streams or they would
// not fit, JSON otherwise.
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
