package order_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/domain"
	"github.com/strata-dev/strata/domain/order"
	"github.com/strata-dev/strata/events"
)

const id = "o-1"

var (
	placed = events.OrderPlacedV1{
		OrderID: id, CustomerID: "c-1", CustomerName: "Ada Lovelace", CustomerEmail: "ada@example.com",
		Lines: []events.OrderLineV1{
			{ProductID: "p-1", SKU: "MUG-350", Name: "Mug", Quantity: 2, UnitPriceCents: 1490},
			{ProductID: "p-2", SKU: "TEA-100", Name: "Tea", Quantity: 1, UnitPriceCents: 650},
		},
		Currency: "EUR", TotalCents: 3630, CallbackURL: "https://shop.example.com/hooks",
	}
	confirmed = events.OrderConfirmedV1{OrderID: id}
	rejected  = events.OrderRejectedV1{OrderID: id, Reason: "out of stock"}
	cancelled = events.OrderCancelledV1{OrderID: id, Reason: "changed my mind"}
	shipped   = events.OrderShippedV1{OrderID: id, Carrier: "DHL", TrackingNumber: "JD0146"}
)

func evs(es ...events.Event) []events.Event { return es }

type testCase struct {
	name  string
	given []events.Event
	when  func(o *order.Order) ([]events.Event, error)
	want  []events.Event
	// wantErr is the sentinel the error must wrap; wantProblems, when set, the exact validation problems.
	wantErr      error
	wantProblems []domain.FieldProblem
	// wantMsg, when set, must appear in the error message.
	wantMsg string
}

func run(t *testing.T, tests []testCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := order.Replay(id, tt.given)
			got, err := tt.when(o)
			switch {
			case tt.wantProblems != nil:
				var ve *domain.ValidationError
				require.ErrorAs(t, err, &ve)
				require.ErrorIs(t, err, domain.ErrInvalid)
				require.Equal(t, tt.wantProblems, ve.Problems)
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
			default:
				require.NoError(t, err)
			}
			if tt.wantMsg != "" {
				require.ErrorContains(t, err, tt.wantMsg)
			}
			require.Equal(t, tt.want, got)
			require.Equal(t, order.Replay(id, tt.given), o, "a decision must not change state")
		})
	}
}

func problem(field, message string) []domain.FieldProblem {
	return []domain.FieldProblem{{Field: field, Message: message}}
}

func validPlace() order.Place {
	return order.Place{
		CustomerID: "c-1", CustomerName: "Ada Lovelace", CustomerEmail: "ada@example.com",
		Lines: []order.Line{
			{ProductID: "p-1", SKU: "MUG-350", Name: "Mug", Quantity: 2, UnitPriceCents: 1490},
			{ProductID: "p-2", SKU: "TEA-100", Name: "Tea", Quantity: 1, UnitPriceCents: 650},
		},
		Currency: "EUR", CallbackURL: "https://shop.example.com/hooks",
	}
}

func place(edit func(p *order.Place)) func(o *order.Order) ([]events.Event, error) {
	return func(o *order.Order) ([]events.Event, error) {
		p := validPlace()
		edit(&p)
		return o.Place(p)
	}
}

func placedWith(edit func(e *events.OrderPlacedV1)) []events.Event {
	e := placed
	e.Lines = append([]events.OrderLineV1(nil), placed.Lines...)
	edit(&e)
	return evs(e)
}

func lines(n int) []order.Line {
	ls := make([]order.Line, n)
	for i := range ls {
		ls[i] = order.Line{ProductID: fmt.Sprintf("p-%d", i), Quantity: 1, UnitPriceCents: 1}
	}
	return ls
}

func eventLines(n int) []events.OrderLineV1 {
	ls := make([]events.OrderLineV1, n)
	for i := range ls {
		ls[i] = events.OrderLineV1{ProductID: fmt.Sprintf("p-%d", i), Quantity: 1, UnitPriceCents: 1}
	}
	return ls
}

func TestPlace(t *testing.T) {
	const (
		emailProblem    = "must be a valid e-mail address"
		bareProblem     = "must be a bare address such as name@example.com"
		urlProblem      = "must be an absolute http or https URL"
		currencyProblem = "must be a three-letter currency code"
	)
	run(t, []testCase{
		{name: "valid", when: place(func(*order.Place) {}), want: evs(placed)},
		{
			name: "normalizes text and currency",
			when: place(func(p *order.Place) {
				p.CustomerID, p.CustomerName, p.CustomerEmail, p.Currency = " c-1 ", " Ada Lovelace ", " ada@example.com ", "eur"
				p.CallbackURL = " https://shop.example.com/hooks "
				p.Lines[0].ProductID, p.Lines[0].SKU, p.Lines[0].Name = " p-1", "MUG-350 ", " Mug "
			}),
			want: evs(placed),
		},
		{
			name: "no callback",
			when: place(func(p *order.Place) { p.CallbackURL = "" }),
			want: placedWith(func(e *events.OrderPlacedV1) { e.CallbackURL = "" }),
		},
		{
			name: "http callback with port and path",
			when: place(func(p *order.Place) { p.CallbackURL = "http://localhost:8080/cb?x=1" }),
			want: placedWith(func(e *events.OrderPlacedV1) { e.CallbackURL = "http://localhost:8080/cb?x=1" }),
		},
		{
			name: "one line",
			when: place(func(p *order.Place) { p.Lines = p.Lines[:1] }),
			want: placedWith(func(e *events.OrderPlacedV1) { e.Lines, e.TotalCents = e.Lines[:1], 2980 }),
		},
		{
			name: "a hundred lines",
			when: place(func(p *order.Place) { p.Lines = lines(100) }),
			want: placedWith(func(e *events.OrderPlacedV1) { e.Lines, e.TotalCents = eventLines(100), 100 }),
		},
		{
			name: "limits are inclusive",
			when: place(func(p *order.Place) {
				p.CustomerID, p.CustomerName = strings.Repeat("é", 100), strings.Repeat("é", 200)
				p.Lines = p.Lines[:1]
				p.Lines[0].Quantity = 10_000
			}),
			want: placedWith(func(e *events.OrderPlacedV1) {
				e.CustomerID, e.CustomerName = strings.Repeat("é", 100), strings.Repeat("é", 200)
				e.Lines = e.Lines[:1]
				e.Lines[0].Quantity = 10_000
				e.TotalCents = 14_900_000
			}),
		},
		{
			name: "largest total",
			when: place(func(p *order.Place) {
				p.Lines = []order.Line{{ProductID: "p-1", Quantity: 1, UnitPriceCents: math.MaxInt64 - 1}, {ProductID: "p-2", Quantity: 1, UnitPriceCents: 1}}
			}),
			want: placedWith(func(e *events.OrderPlacedV1) {
				e.Lines = []events.OrderLineV1{{ProductID: "p-1", Quantity: 1, UnitPriceCents: math.MaxInt64 - 1}, {ProductID: "p-2", Quantity: 1, UnitPriceCents: 1}}
				e.TotalCents = math.MaxInt64
			}),
		},
		{name: "already exists", given: evs(placed), when: place(func(*order.Place) {}), wantErr: order.ErrAlreadyExists},
		{name: "already exists is a rule", given: evs(placed, cancelled), when: place(func(*order.Place) {}), wantErr: domain.ErrRule},

		{name: "customer id empty", when: place(func(p *order.Place) { p.CustomerID = " " }), wantProblems: problem("customer_id", "is required")},
		{name: "customer id too long", when: place(func(p *order.Place) { p.CustomerID = strings.Repeat("c", 101) }),
			wantProblems: problem("customer_id", "must be between 1 and 100 characters")},
		{name: "customer id with a control character", when: place(func(p *order.Place) { p.CustomerID = "c\x001" }),
			wantProblems: problem("customer_id", "must not contain control characters")},
		{name: "customer name empty", when: place(func(p *order.Place) { p.CustomerName = "" }), wantProblems: problem("customer_name", "is required")},
		{name: "customer name too long", when: place(func(p *order.Place) { p.CustomerName = strings.Repeat("n", 201) }),
			wantProblems: problem("customer_name", "must be between 1 and 200 characters")},
		{name: "customer name with a line break", when: place(func(p *order.Place) { p.CustomerName = "Ada\nLovelace" }),
			wantProblems: problem("customer_name", "must not contain control characters")},

		{name: "email empty", when: place(func(p *order.Place) { p.CustomerEmail = "" }), wantProblems: problem("customer_email", "is required")},
		{name: "email without at", when: place(func(p *order.Place) { p.CustomerEmail = "ada.example.com" }), wantProblems: problem("customer_email", emailProblem)},
		{name: "email without domain", when: place(func(p *order.Place) { p.CustomerEmail = "ada@" }), wantProblems: problem("customer_email", emailProblem)},
		{name: "two emails", when: place(func(p *order.Place) { p.CustomerEmail = "ada@example.com, bob@example.com" }),
			wantProblems: problem("customer_email", emailProblem)},
		{name: "email with a display name", when: place(func(p *order.Place) { p.CustomerEmail = "Ada <ada@example.com>" }),
			wantProblems: problem("customer_email", "must be a bare address without a display name")},
		{name: "email in angle brackets", when: place(func(p *order.Place) { p.CustomerEmail = "<ada@example.com>" }),
			wantProblems: problem("customer_email", bareProblem)},
		{name: "email with a comment", when: place(func(p *order.Place) { p.CustomerEmail = "ada@example.com (Ada)" }),
			wantProblems: problem("customer_email", "must be a bare address without a display name")},
		{name: "email too long", when: place(func(p *order.Place) {
			p.CustomerEmail = strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + ".com"
		}),
			wantProblems: problem("customer_email", "must be at most 254 characters")},

		{name: "no lines", when: place(func(p *order.Place) { p.Lines = nil }), wantProblems: problem("lines", "must hold between 1 and 100 lines")},
		{name: "too many lines", when: place(func(p *order.Place) { p.Lines = lines(101) }), wantProblems: problem("lines", "must hold between 1 and 100 lines")},
		{name: "product id empty", when: place(func(p *order.Place) { p.Lines[1].ProductID = "" }), wantProblems: problem("lines[1].product_id", "is required")},
		{name: "product id too long", when: place(func(p *order.Place) { p.Lines[0].ProductID = strings.Repeat("p", 101) }),
			wantProblems: problem("lines[0].product_id", "must be between 1 and 100 characters")},
		{name: "product twice", when: place(func(p *order.Place) {
			p.Lines = append(p.Lines, order.Line{ProductID: " p-1", Quantity: 1, UnitPriceCents: 1})
		}),
			wantProblems: problem("lines[2].product_id", "repeats lines[0].product_id: order each product on one line")},
		{name: "quantity zero", when: place(func(p *order.Place) { p.Lines[0].Quantity = 0 }),
			wantProblems: problem("lines[0].quantity", "must be between 1 and 10000")},
		{name: "quantity negative", when: place(func(p *order.Place) { p.Lines[1].Quantity = -2 }),
			wantProblems: problem("lines[1].quantity", "must be between 1 and 10000")},
		{name: "quantity too high", when: place(func(p *order.Place) { p.Lines[0].Quantity = 10_001 }),
			wantProblems: problem("lines[0].quantity", "must be between 1 and 10000")},
		{name: "unit price zero", when: place(func(p *order.Place) { p.Lines[0].UnitPriceCents = 0 }),
			wantProblems: problem("lines[0].unit_price_cents", "must be greater than 0")},
		{name: "unit price negative", when: place(func(p *order.Place) { p.Lines[1].UnitPriceCents = -650 }),
			wantProblems: problem("lines[1].unit_price_cents", "must be greater than 0")},
		{name: "line total overflows", when: place(func(p *order.Place) {
			p.Lines = []order.Line{{ProductID: "p-1", Quantity: 2, UnitPriceCents: math.MaxInt64/2 + 1}}
		}), wantProblems: problem("lines", "order total is too large")},
		{name: "order total overflows", when: place(func(p *order.Place) {
			p.Lines = []order.Line{
				{ProductID: "p-1", Quantity: 1, UnitPriceCents: math.MaxInt64},
				{ProductID: "p-2", Quantity: 1, UnitPriceCents: 1},
				{ProductID: "p-3", Quantity: 1, UnitPriceCents: math.MaxInt64},
			}
		}), wantProblems: problem("lines", "order total is too large")},

		{name: "currency empty", when: place(func(p *order.Place) { p.Currency = "" }), wantProblems: problem("currency", currencyProblem)},
		{name: "currency too long", when: place(func(p *order.Place) { p.Currency = "EURO" }), wantProblems: problem("currency", currencyProblem)},
		{name: "currency with a digit", when: place(func(p *order.Place) { p.Currency = "EU1" }), wantProblems: problem("currency", currencyProblem)},

		{name: "callback relative", when: place(func(p *order.Place) { p.CallbackURL = "/hooks" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback without scheme", when: place(func(p *order.Place) { p.CallbackURL = "shop.example.com/hooks" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback ftp", when: place(func(p *order.Place) { p.CallbackURL = "ftp://shop.example.com/hooks" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback javascript", when: place(func(p *order.Place) { p.CallbackURL = "javascript:alert(1)" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback without host", when: place(func(p *order.Place) { p.CallbackURL = "https:///hooks" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback unparsable", when: place(func(p *order.Place) { p.CallbackURL = "https://exa mple.com/%zz" }), wantProblems: problem("callback_url", urlProblem)},
		{name: "callback too long", when: place(func(p *order.Place) { p.CallbackURL = "https://example.com/" + strings.Repeat("a", 2029) }),
			wantProblems: problem("callback_url", "must be at most 2048 characters")},

		{
			name: "every problem at once",
			when: func(o *order.Order) ([]events.Event, error) {
				return o.Place(order.Place{
					CustomerEmail: "nope",
					Lines: []order.Line{
						{ProductID: "p-1", Quantity: 0, UnitPriceCents: 0},
						{ProductID: "p-1", Quantity: 1, UnitPriceCents: 1},
					},
					Currency:    "euros",
					CallbackURL: "nope",
				})
			},
			wantProblems: []domain.FieldProblem{
				{Field: "customer_id", Message: "is required"},
				{Field: "customer_name", Message: "is required"},
				{Field: "customer_email", Message: emailProblem},
				{Field: "lines[0].quantity", Message: "must be between 1 and 10000"},
				{Field: "lines[0].unit_price_cents", Message: "must be greater than 0"},
				{Field: "lines[1].product_id", Message: "repeats lines[0].product_id: order each product on one line"},
				{Field: "currency", Message: currencyProblem},
				{Field: "callback_url", Message: urlProblem},
			},
		},
	})
}

func confirm(o *order.Order) ([]events.Event, error) { return o.Confirm() }

func reject(reason string) func(o *order.Order) ([]events.Event, error) {
	return func(o *order.Order) ([]events.Event, error) { return o.Reject(reason) }
}

func cancel(reason string) func(o *order.Order) ([]events.Event, error) {
	return func(o *order.Order) ([]events.Event, error) { return o.Cancel(reason) }
}

func ship(carrier, tracking string) func(o *order.Order) ([]events.Event, error) {
	return func(o *order.Order) ([]events.Event, error) { return o.Ship(carrier, tracking) }
}

// TestTransitions covers every command from every status: the four allowed transitions plus every
// refused one, whose error names both statuses.
func TestTransitions(t *testing.T) {
	histories := map[order.Status][]events.Event{
		order.Pending:   evs(placed),
		order.Confirmed: evs(placed, confirmed),
		order.Rejected:  evs(placed, rejected),
		order.Cancelled: evs(placed, confirmed, cancelled),
		order.Shipped:   evs(placed, confirmed, shipped),
	}
	commands := []struct {
		to   order.Status
		when func(o *order.Order) ([]events.Event, error)
		want events.Event
	}{
		{to: order.Confirmed, when: confirm, want: confirmed},
		{to: order.Rejected, when: reject("out of stock"), want: rejected},
		{to: order.Cancelled, when: cancel("changed my mind"), want: cancelled},
		{to: order.Shipped, when: ship("DHL", "JD0146"), want: shipped},
	}
	allowed := map[[2]order.Status]bool{
		{order.Pending, order.Confirmed}:   true,
		{order.Pending, order.Rejected}:    true,
		{order.Pending, order.Cancelled}:   true,
		{order.Confirmed, order.Shipped}:   true,
		{order.Confirmed, order.Cancelled}: true,
	}
	var tests []testCase
	for _, from := range []order.Status{order.Pending, order.Confirmed, order.Rejected, order.Cancelled, order.Shipped} {
		for _, c := range commands {
			tc := testCase{name: fmt.Sprintf("%s to %s", from, c.to), given: histories[from], when: c.when}
			if allowed[[2]order.Status{from, c.to}] {
				tc.want = evs(c.want)
			} else {
				tc.wantErr = order.ErrInvalidTransition
				tc.wantMsg = fmt.Sprintf("cannot go from %s to %s", from, c.to)
			}
			tests = append(tests, tc)
		}
		tests = append(tests, testCase{
			name: fmt.Sprintf("%s: input checked before the transition", from), given: histories[from], when: ship("", ""),
			wantProblems: []domain.FieldProblem{{Field: "carrier", Message: "is required"}, {Field: "tracking_number", Message: "is required"}},
		})
	}
	for _, c := range commands {
		tests = append(tests, testCase{name: fmt.Sprintf("not found to %s", c.to), when: c.when, wantErr: domain.ErrNotFound})
	}
	tests = append(tests, testCase{name: "invalid transition is a rule", given: histories[order.Shipped], when: confirm, wantErr: domain.ErrRule})
	run(t, tests)
}

func TestTransitionInput(t *testing.T) {
	pending, ready := evs(placed), evs(placed, confirmed)
	run(t, []testCase{
		{name: "reject trims reason", given: pending, when: reject(" out of stock "), want: evs(rejected)},
		{name: "reject reason empty", given: pending, when: reject(" "), wantProblems: problem("reason", "is required")},
		{name: "reject reason too long", given: pending, when: reject(strings.Repeat("r", 201)),
			wantProblems: problem("reason", "must be between 1 and 200 characters")},
		{name: "reject reason with a control character", given: pending, when: reject("out\x00of stock"),
			wantProblems: problem("reason", "must not contain control characters")},
		{name: "not found before invalid reason", when: reject(""), wantErr: domain.ErrNotFound},

		{name: "cancel trims reason", given: ready, when: cancel("\tchanged my mind"), want: evs(cancelled)},
		{name: "cancel reason longest", given: pending, when: cancel(strings.Repeat("é", 200)),
			want: evs(events.OrderCancelledV1{OrderID: id, Reason: strings.Repeat("é", 200)})},
		{name: "cancel reason empty", given: pending, when: cancel(""), wantProblems: problem("reason", "is required")},
		{name: "cancel reason too long", given: ready, when: cancel(strings.Repeat("r", 201)),
			wantProblems: problem("reason", "must be between 1 and 200 characters")},
		{name: "invalid input before invalid transition", given: evs(placed, confirmed, shipped), when: cancel(""),
			wantProblems: problem("reason", "is required")},

		{name: "ship trims", given: ready, when: ship(" DHL ", " JD0146 "), want: evs(shipped)},
		{name: "ship longest", given: ready, when: ship(strings.Repeat("c", 100), strings.Repeat("t", 100)),
			want: evs(events.OrderShippedV1{OrderID: id, Carrier: strings.Repeat("c", 100), TrackingNumber: strings.Repeat("t", 100)})},
		{name: "carrier empty", given: ready, when: ship("", "JD0146"), wantProblems: problem("carrier", "is required")},
		{name: "carrier too long", given: ready, when: ship(strings.Repeat("c", 101), "JD0146"),
			wantProblems: problem("carrier", "must be between 1 and 100 characters")},
		{name: "tracking number empty", given: ready, when: ship("DHL", ""), wantProblems: problem("tracking_number", "is required")},
		{name: "tracking number too long", given: ready, when: ship("DHL", strings.Repeat("t", 101)),
			wantProblems: problem("tracking_number", "must be between 1 and 100 characters")},
		{name: "tracking number with a control character", given: ready, when: ship("DHL", "JD\n0146"),
			wantProblems: problem("tracking_number", "must not contain control characters")},
	})
}

func TestErrorsWrapDomainKinds(t *testing.T) {
	for _, err := range []error{order.ErrAlreadyExists, order.ErrInvalidTransition} {
		require.ErrorIs(t, err, domain.ErrRule)
		require.NotErrorIs(t, err, domain.ErrInvalid)
	}
}

// TestReplay decides an order's life command by command, applying each decision, and checks that the
// state reached and the state replayed from the recorded history agree.
func TestReplay(t *testing.T) {
	o := order.New(id)
	require.False(t, o.Exists())
	require.Equal(t, order.Status(""), o.Status())

	var history []events.Event
	decide := func(es []events.Event, err error) {
		t.Helper()
		require.NoError(t, err)
		for _, e := range es {
			o.Apply(e)
		}
		history = append(history, es...)
	}
	decide(o.Place(validPlace()))
	require.Equal(t, order.Pending, o.Status())
	decide(o.Confirm())
	require.Equal(t, order.Confirmed, o.Status())
	decide(o.Ship("DHL", "JD0146"))
	require.Equal(t, evs(placed, confirmed, shipped), history)

	// A product event in the same history is ignored.
	history = append(history, events.ProductRenamedV1{ProductID: "p-1", Name: "Big mug"})
	replayed := order.Replay(id, history)
	require.Equal(t, o, replayed)

	require.Equal(t, id, replayed.ID())
	require.True(t, replayed.Exists())
	require.Equal(t, order.Shipped, replayed.Status())
	require.Equal(t, "c-1", replayed.CustomerID())
	require.Equal(t, "Ada Lovelace", replayed.CustomerName())
	require.Equal(t, "ada@example.com", replayed.CustomerEmail())
	require.Equal(t, validPlace().Lines, replayed.Lines())
	require.Equal(t, "EUR", replayed.Currency())
	require.Equal(t, int64(3630), replayed.TotalCents())
	require.Equal(t, "https://shop.example.com/hooks", replayed.CallbackURL())

	ls := replayed.Lines()
	ls[0].Quantity = 99
	require.Equal(t, int64(2), replayed.Lines()[0].Quantity, "Lines must return a copy")
}

func TestReplayEndStates(t *testing.T) {
	tests := []struct {
		history []events.Event
		want    order.Status
	}{
		{history: evs(placed), want: order.Pending},
		{history: evs(placed, rejected), want: order.Rejected},
		{history: evs(placed, cancelled), want: order.Cancelled},
		{history: evs(placed, confirmed, cancelled), want: order.Cancelled},
	}
	for _, tt := range tests {
		t.Run(string(tt.want), func(t *testing.T) {
			require.Equal(t, tt.want, order.Replay(id, tt.history).Status())
		})
	}
}

// The command service caches states and applies new events to clones: a clone must share nothing.
func TestCloneSharesNothing(t *testing.T) {
	o := order.Replay(id, evs(placed))
	c := o.Clone()
	c.Apply(confirmed)
	c.Apply(events.OrderPlacedV1{OrderID: id, Lines: []events.OrderLineV1{{ProductID: "p-9", Quantity: 1}}})

	require.Equal(t, order.Replay(id, evs(placed)), o)
	require.Equal(t, order.Pending, o.Status())
	require.Len(t, o.Lines(), 2)
}
