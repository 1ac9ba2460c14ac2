package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// ErrUnknownEventType is returned, wrapped with the offending name and version, when a [Codec] is asked
// to encode or decode a payload version it was not built with. A consumer that meets it is usually older
// than the writer and should stop rather than skip the event.
var ErrUnknownEventType = errors.New("unknown event type")

// Type describes one payload version to a [Codec]: its name, its schema version and how to decode it.
// Construct it with [Def]; the zero Type is rejected by [NewCodec].
type Type struct {
	name    string
	version int
	goType  reflect.Type
	decode  func(data []byte) (Event, error)
	err     error
}

// Def describes the payload type T. It reads the name and version from the zero T's EventType, so
// "product.created.v1" becomes name "product.created", version 1; the type name is never derived from
// Go's. T must be a struct type whose EventType has a value receiver, and events of it are used by value.
// Def does not fail: a T that breaks these rules yields a Type that [NewCodec] reports.
func Def[T Event]() Type {
	rt := reflect.TypeFor[T]()
	if rt.Kind() != reflect.Struct {
		// Calling EventType on a nil pointer or interface would panic, so stop before it.
		return Type{err: fmt.Errorf("define %s: payload must be a struct used by value, not %s", rt, rt.Kind())}
	}
	var zero T
	name, version, err := parseEventType(zero.EventType())
	if err != nil {
		return Type{err: fmt.Errorf("define %s: %w", rt, err)}
	}
	return Type{
		name:    name,
		version: version,
		goType:  rt,
		decode: func(data []byte) (Event, error) {
			var e T
			if err := json.Unmarshal(data, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
	}
}

// Name returns the event's name without its version, such as "product.created".
func (t Type) Name() string { return t.name }

// Version returns the payload's schema version, 1 for "product.created.v1".
func (t Type) Version() int { return t.version }

// String returns the full event type, such as "product.created.v1".
func (t Type) String() string { return typeString(t.name, t.version) }

// Upcaster turns the stored JSON of version From of the event Name into the JSON of version From+1, so
// that old history decodes into the newest payload type. Up must be a pure function of its input and must
// not modify it; it fails when the input cannot be converted.
type Upcaster struct {
	Name string
	From int
	Up   func(data []byte) ([]byte, error)
}

// Codec turns event payloads into the name, schema version and JSON the store keeps, and back. Build one
// with [NewCodec] where the program is wired; it holds no global state and is safe for concurrent use.
type Codec struct {
	types     map[typeKey]Type
	upcasters map[typeKey]Upcaster
	newest    map[string]int
}

type typeKey struct {
	name    string
	version int
}

// NewCodec builds a codec from every payload version the program knows and the upcasters between them.
// It checks that history stays decodable and reports every problem at once: a Type not made by [Def] or
// with a malformed EventType, the same version registered twice, an upcaster without Up, with From < 1,
// repeated, or whose target version From+1 is not registered, and gaps: each name must have every version
// from 1 to its newest, and an upcaster from each version below the newest.
func NewCodec(types []Type, upcasters []Upcaster) (*Codec, error) {
	c := &Codec{
		types:     make(map[typeKey]Type, len(types)),
		upcasters: make(map[typeKey]Upcaster, len(upcasters)),
		newest:    make(map[string]int),
	}
	var errs []error
	for i, t := range types {
		switch {
		case t.err != nil:
			errs = append(errs, fmt.Errorf("types[%d]: %w", i, t.err))
			continue
		case t.decode == nil:
			errs = append(errs, fmt.Errorf("types[%d]: not made by events.Def", i))
			continue
		}
		k := typeKey{t.name, t.version}
		if prev, dup := c.types[k]; dup {
			errs = append(errs, fmt.Errorf("types[%d]: %s registered twice (%s and %s)", i, t, prev.goType, t.goType))
			continue
		}
		c.types[k] = t
		c.newest[t.name] = max(c.newest[t.name], t.version)
	}
	for i, u := range upcasters {
		k := typeKey{u.Name, u.From}
		switch {
		case u.Up == nil:
			errs = append(errs, fmt.Errorf("upcasters[%d] %s: Up is nil", i, typeString(u.Name, u.From)))
		case u.From < 1:
			errs = append(errs, fmt.Errorf("upcasters[%d] %s: From must be at least 1", i, typeString(u.Name, u.From)))
		case !c.has(u.Name, u.From+1):
			errs = append(errs, fmt.Errorf("upcasters[%d] %s: no registered target type %s", i,
				typeString(u.Name, u.From), typeString(u.Name, u.From+1)))
		default:
			if _, dup := c.upcasters[k]; dup {
				errs = append(errs, fmt.Errorf("upcasters[%d] %s: registered twice", i, typeString(u.Name, u.From)))
				continue
			}
			c.upcasters[k] = u
		}
	}
	names := make([]string, 0, len(c.newest))
	for name := range c.newest {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for v := 1; v <= c.newest[name]; v++ {
			if !c.has(name, v) {
				errs = append(errs, fmt.Errorf("%s: gap: version %d is not registered", typeString(name, c.newest[name]), v))
				continue
			}
			if _, ok := c.upcasters[typeKey{name, v}]; v < c.newest[name] && !ok {
				errs = append(errs, fmt.Errorf("%s: gap: no upcaster to v%d", typeString(name, v), v+1))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new codec: %w", err)
	}
	return c, nil
}

func (c *Codec) has(name string, version int) bool {
	_, ok := c.types[typeKey{name, version}]
	return ok
}

// Types returns every payload version c knows, ordered by name and version. Tools use it to list or
// check what a program can read.
func (c *Codec) Types() []Type {
	ts := make([]Type, 0, len(c.types))
	for _, t := range c.types {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].name != ts[j].name {
			return ts[i].name < ts[j].name
		}
		return ts[i].version < ts[j].version
	})
	return ts
}

// Encode returns the name, schema version and JSON under which e is stored. It fails with
// [ErrUnknownEventType] when e's version is not registered, and when e is not the registered Go type for
// its EventType (a pointer, or another struct claiming the same name), because such a payload could not
// be decoded back into what was written.
func (c *Codec) Encode(e Event) (name string, schemaVersion int, data []byte, err error) {
	if e == nil {
		return "", 0, nil, errors.New("encode: nil event")
	}
	rt := reflect.TypeOf(e)
	if rt.Kind() != reflect.Struct {
		return "", 0, nil, fmt.Errorf("encode %s: payload must be a struct used by value", rt)
	}
	et := e.EventType()
	name, schemaVersion, err = parseEventType(et)
	if err != nil {
		return "", 0, nil, fmt.Errorf("encode %s: %w", rt, err)
	}
	t, ok := c.types[typeKey{name, schemaVersion}]
	if !ok {
		return "", 0, nil, fmt.Errorf("encode %s: %w", et, ErrUnknownEventType)
	}
	if t.goType != rt {
		return "", 0, nil, fmt.Errorf("encode %s: payload is %s, but %s is registered as %s", et, rt, et, t.goType)
	}
	data, err = json.Marshal(e)
	if err != nil {
		return "", 0, nil, fmt.Errorf("encode %s: %w", et, err)
	}
	return name, schemaVersion, data, nil
}

// Decode turns stored JSON of version schemaVersion of the event name into the newest payload type of
// that name, running the upcasters in order first. It ignores JSON fields the payload does not know, so
// that data written by a newer program still decodes. It fails with [ErrUnknownEventType] for a name or
// version the codec does not know, and with the underlying error for malformed JSON or a failed upcaster.
func (c *Codec) Decode(name string, schemaVersion int, data []byte) (Event, error) {
	et := typeString(name, schemaVersion)
	newest, ok := c.newest[name]
	if !ok || !c.has(name, schemaVersion) {
		return nil, fmt.Errorf("decode %s: %w", et, ErrUnknownEventType)
	}
	for v := schemaVersion; v < newest; v++ {
		up, err := c.upcasters[typeKey{name, v}].Up(data)
		if err != nil {
			return nil, fmt.Errorf("decode %s: upcast v%d to v%d: %w", et, v, v+1, err)
		}
		data = up
	}
	e, err := c.types[typeKey{name, newest}].decode(data)
	if err != nil {
		return nil, fmt.Errorf("decode %s as %s: %w", et, typeString(name, newest), err)
	}
	return e, nil
}

func typeString(name string, version int) string {
	return name + ".v" + strconv.Itoa(version)
}

// parseEventType splits "product.created.v1" into "product.created" and 1. The name is one or more
// dot-separated segments of lower-case letters, digits and '-'; the version has no sign or leading zero.
func parseEventType(s string) (name string, version int, err error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return "", 0, fmt.Errorf("event type %q: want <name>.v<version>", s)
	}
	name, v := s[:i], s[i+1:]
	digits, ok := strings.CutPrefix(v, "v")
	if !ok || digits == "" || digits[0] == '0' || strings.Trim(digits, "0123456789") != "" {
		return "", 0, fmt.Errorf("event type %q: version must be v followed by a number from 1", s)
	}
	version, err = strconv.Atoi(digits)
	if err != nil {
		return "", 0, fmt.Errorf("event type %q: %w", s, err)
	}
	for seg := range strings.SplitSeq(name, ".") {
		if seg == "" || strings.Trim(seg, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return "", 0, fmt.Errorf("event type %q: name must be dot-separated segments of a-z, 0-9 and '-'", s)
		}
	}
	return name, version, nil
}
