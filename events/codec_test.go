package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/events"
)

// The widget payloads are test-only: v2 renamed name to title, v3 added color.
type widgetV1 struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (widgetV1) EventType() string { return "test.widget.v1" }

type widgetV2 struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

func (widgetV2) EventType() string { return "test.widget.v2" }

type widgetV3 struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Color string `json:"color"`
}

func (widgetV3) EventType() string { return "test.widget.v3" }

// otherWidgetV1 claims widgetV1's type name, as a copy-pasted payload would.
type otherWidgetV1 struct{}

func (otherWidgetV1) EventType() string { return "test.widget.v1" }

type gadgetV2 struct{}

func (gadgetV2) EventType() string { return "test.gadget.v2" }

type noVersion struct{}

func (noVersion) EventType() string { return "test.widget" }

type zeroVersion struct{}

func (zeroVersion) EventType() string { return "test.widget.v0" }

type paddedVersion struct{}

func (paddedVersion) EventType() string { return "test.widget.v01" }

type upperVersion struct{}

func (upperVersion) EventType() string { return "test.widget.V1" }

type upperName struct{}

func (upperName) EventType() string { return "Test.Widget.v1" }

type emptySegment struct{}

func (emptySegment) EventType() string { return "test..widget.v1" }

type noName struct{}

func (noName) EventType() string { return ".v1" }

type pointerWidget struct{}

func (*pointerWidget) EventType() string { return "test.pointer.v1" }

func v1ToV2(data []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["title"] = m["name"]
	delete(m, "name")
	return json.Marshal(m)
}

func v2ToV3(data []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["color"] = "unknown"
	return json.Marshal(m)
}

func widgetCodec(t *testing.T) *events.Codec {
	t.Helper()
	c, err := events.NewCodec(
		[]events.Type{events.Def[widgetV1](), events.Def[widgetV2](), events.Def[widgetV3]()},
		[]events.Upcaster{
			{Name: "test.widget", From: 2, Up: v2ToV3},
			{Name: "test.widget", From: 1, Up: v1ToV2},
		},
	)
	require.NoError(t, err)
	return c
}

func TestDef(t *testing.T) {
	d := events.Def[widgetV2]()
	require.Equal(t, "test.widget", d.Name())
	require.Equal(t, 2, d.Version())
	require.Equal(t, "test.widget.v2", d.String())
}

func TestCodecDecodeUpcastsToNewest(t *testing.T) {
	c := widgetCodec(t)
	tests := []struct {
		name    string
		version int
		data    string
		want    events.Event
	}{
		{name: "v1 runs both upcasters", version: 1, data: `{"id":"w-1","name":"Anvil"}`,
			want: widgetV3{ID: "w-1", Title: "Anvil", Color: "unknown"}},
		{name: "v2 runs the last upcaster", version: 2, data: `{"id":"w-1","title":"Anvil"}`,
			want: widgetV3{ID: "w-1", Title: "Anvil", Color: "unknown"}},
		{name: "v3 decodes as stored", version: 3, data: `{"id":"w-1","title":"Anvil","color":"red"}`,
			want: widgetV3{ID: "w-1", Title: "Anvil", Color: "red"}},
		{name: "unknown fields are ignored", version: 3, data: `{"id":"w-1","title":"Anvil","color":"red","size":9}`,
			want: widgetV3{ID: "w-1", Title: "Anvil", Color: "red"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Decode("test.widget", tt.version, []byte(tt.data))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestCodecDecodeErrors(t *testing.T) {
	failing := errors.New("boom")
	c, err := events.NewCodec(
		[]events.Type{events.Def[widgetV1](), events.Def[widgetV2]()},
		[]events.Upcaster{{Name: "test.widget", From: 1, Up: func([]byte) ([]byte, error) { return nil, failing }}},
	)
	require.NoError(t, err)
	tests := []struct {
		name    string
		type_   string
		version int
		data    string
		wantErr error
	}{
		{name: "unknown name", type_: "test.gizmo", version: 1, data: `{}`, wantErr: events.ErrUnknownEventType},
		{name: "version zero", type_: "test.widget", version: 0, data: `{}`, wantErr: events.ErrUnknownEventType},
		{name: "version newer than known", type_: "test.widget", version: 3, data: `{}`, wantErr: events.ErrUnknownEventType},
		{name: "upcaster fails", type_: "test.widget", version: 1, data: `{}`, wantErr: failing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Decode(tt.type_, tt.version, []byte(tt.data))
			require.ErrorIs(t, err, tt.wantErr)
		})
	}

	for _, data := range []string{``, `{`, `{"id":1}`, `[]`, `{"id":"w"} trailing`} {
		t.Run("malformed "+data, func(t *testing.T) {
			_, err := c.Decode("test.widget", 2, []byte(data))
			require.Error(t, err)
			require.NotErrorIs(t, err, events.ErrUnknownEventType)
		})
	}
}

func TestCodecEncode(t *testing.T) {
	c := widgetCodec(t)
	name, version, data, err := c.Encode(widgetV1{ID: "w-1", Name: "Anvil"})
	require.NoError(t, err)
	require.Equal(t, "test.widget", name)
	require.Equal(t, 1, version)
	require.JSONEq(t, `{"id":"w-1","name":"Anvil"}`, string(data))

	got, err := c.Decode(name, version, data)
	require.NoError(t, err)
	require.Equal(t, widgetV3{ID: "w-1", Title: "Anvil", Color: "unknown"}, got)
}

func TestCodecEncodeErrors(t *testing.T) {
	c := widgetCodec(t)
	tests := []struct {
		name    string
		event   events.Event
		wantErr error
	}{
		{name: "nil", event: nil},
		{name: "pointer", event: &widgetV1{}},
		{name: "nil pointer", event: (*pointerWidget)(nil)},
		{name: "unregistered", event: gadgetV2{}, wantErr: events.ErrUnknownEventType},
		{name: "malformed type", event: noVersion{}},
		{name: "another struct claiming a registered type", event: otherWidgetV1{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := c.Encode(tt.event)
			require.Error(t, err)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

func TestNewCodecRejects(t *testing.T) {
	up := func(b []byte) ([]byte, error) { return b, nil }
	w1, w2, w3 := events.Def[widgetV1](), events.Def[widgetV2](), events.Def[widgetV3]()
	tests := []struct {
		name      string
		types     []events.Type
		upcasters []events.Upcaster
		wantMsg   string
	}{
		{name: "zero type", types: []events.Type{{}}, wantMsg: "not made by events.Def"},
		{name: "pointer type", types: []events.Type{events.Def[*pointerWidget]()}, wantMsg: "struct used by value"},
		{name: "interface type", types: []events.Type{events.Def[events.Event]()}, wantMsg: "struct used by value"},
		{name: "no version", types: []events.Type{events.Def[noVersion]()}, wantMsg: `"test.widget"`},
		{name: "version zero", types: []events.Type{events.Def[zeroVersion]()}, wantMsg: "v0"},
		{name: "leading zero", types: []events.Type{events.Def[paddedVersion]()}, wantMsg: "v01"},
		{name: "upper-case v", types: []events.Type{events.Def[upperVersion]()}, wantMsg: "V1"},
		{name: "upper-case name", types: []events.Type{events.Def[upperName]()}, wantMsg: "Test.Widget"},
		{name: "empty name segment", types: []events.Type{events.Def[emptySegment]()}, wantMsg: "test..widget"},
		{name: "empty name", types: []events.Type{events.Def[noName]()}, wantMsg: `".v1"`},
		{name: "duplicate type", types: []events.Type{w1, w1}, wantMsg: "test.widget.v1 registered twice"},
		{name: "same type name from two structs", types: []events.Type{w1, events.Def[otherWidgetV1]()},
			wantMsg: "registered twice"},
		{name: "upcaster without target", types: []events.Type{w1},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 1, Up: up}}, wantMsg: "no registered target type test.widget.v2"},
		{name: "upcaster for unknown name", types: []events.Type{w1},
			upcasters: []events.Upcaster{{Name: "test.gizmo", From: 1, Up: up}}, wantMsg: "no registered target type test.gizmo.v2"},
		{name: "upcaster without func", types: []events.Type{w1, w2},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 1}}, wantMsg: "Up is nil"},
		{name: "upcaster from zero", types: []events.Type{w1, w2},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 0, Up: up}, {Name: "test.widget", From: 1, Up: up}},
			wantMsg:   "From must be at least 1"},
		{name: "duplicate upcaster", types: []events.Type{w1, w2},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 1, Up: up}, {Name: "test.widget", From: 1, Up: up}},
			wantMsg:   "upcasters[1] test.widget.v1: registered twice"},
		{name: "missing upcaster", types: []events.Type{w1, w2}, wantMsg: "test.widget.v1: gap: no upcaster to v2"},
		{name: "missing middle upcaster", types: []events.Type{w1, w2, w3},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 1, Up: up}}, wantMsg: "test.widget.v2: gap: no upcaster to v3"},
		{name: "missing middle version", types: []events.Type{w1, w3},
			upcasters: []events.Upcaster{{Name: "test.widget", From: 2, Up: up}}, wantMsg: "gap: version 2 is not registered"},
		{name: "missing first version", types: []events.Type{events.Def[gadgetV2]()}, wantMsg: "test.gadget.v2: gap: version 1 is not registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := events.NewCodec(tt.types, tt.upcasters)
			require.Error(t, err)
			require.Nil(t, c)
			require.Contains(t, err.Error(), tt.wantMsg)
		})
	}
}

func TestNewCodecReportsEveryProblem(t *testing.T) {
	_, err := events.NewCodec(
		[]events.Type{events.Def[noVersion](), events.Def[widgetV1](), events.Def[widgetV1](), events.Def[gadgetV2]()},
		[]events.Upcaster{{Name: "test.gizmo", From: 1, Up: v1ToV2}},
	)
	require.Error(t, err)
	for _, want := range []string{
		"types[0]", "types[2]: test.widget.v1 registered twice", "upcasters[0] test.gizmo.v1", "test.gadget.v2: gap",
	} {
		require.Contains(t, err.Error(), want)
	}
}

func TestCodecTypes(t *testing.T) {
	var got []string
	for _, ty := range widgetCodec(t).Types() {
		got = append(got, fmt.Sprintf("%s/%d", ty.Name(), ty.Version()))
	}
	require.Equal(t, []string{"test.widget/1", "test.widget/2", "test.widget/3"}, got)
}
