package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones work on hosts without a zoneinfo database
)

// Conditions narrow when a rule that matched a request lets it through. They are checked
// after the rule is chosen: a request that fails them is denied, never handed to a later
// rule.
type Conditions struct {
	// Days is the set of weekdays (time.Weekday bits) the rule is open; 0 means every day.
	Days uint8
	// From and To are minutes after midnight; the rule is open in [From, To), which wraps
	// past midnight when To < From. HasHours is false when no hours are set.
	From, To int
	HasHours bool
	// Location is the time zone of Days, hours and the token budget's day (UTC by default).
	Location *time.Location
	// Rate requests per Per are allowed per agent for the rule (0: no limit), with bursts up
	// to Rate.
	Rate int
	Per  time.Duration
	// MaxBody caps the request body in bytes (0: no cap).
	MaxBody int64
	// DailyTokens caps the LLM tokens (input plus output, as the provider reports them) the
	// agent may use through this rule per day (0: no budget).
	DailyTokens int64

	spec string // rate spec, so a changed rate replaces the running limiter
}

// Open reports whether t falls in the rule's time window.
func (c *Conditions) Open(t time.Time) bool {
	if c.Days == 0 && !c.HasHours {
		return true
	}
	t = t.In(c.Location)
	day := t.Weekday()
	mins := t.Hour()*60 + t.Minute()
	if c.HasHours && c.To < c.From && mins < c.To {
		// After midnight in a window that began the day before.
		day = (day + 6) % 7
	}
	if c.Days != 0 && c.Days&(1<<day) == 0 {
		return false
	}
	if !c.HasHours {
		return true
	}
	if c.From <= c.To {
		return mins >= c.From && mins < c.To
	}
	return mins >= c.From || mins < c.To
}

// day is the calendar day of t in the conditions' time zone, for the token budget, as
// yyyymmdd.
func (c *Conditions) day(t time.Time) int {
	y, m, d := t.In(c.Location).Date()
	return y*10000 + int(m)*100 + d
}

// untilNextDay is how long from t until the next day begins in the conditions' time zone, when
// a daily budget starts over.
func (c *Conditions) untilNextDay(t time.Time) time.Duration {
	l := t.In(c.Location)
	y, m, d := l.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, c.Location).Sub(l)
}

// Describe says in words what the conditions are, for `policy explain`.
func (c *Conditions) Describe() []string {
	var out []string
	if c.Days != 0 || c.HasHours {
		var w []string
		if c.Days != 0 {
			var ds []string
			for d := range 7 {
				if c.Days&(1<<d) != 0 {
					ds = append(ds, dayNames[d])
				}
			}
			w = append(w, strings.Join(ds, ","))
		}
		if c.HasHours {
			w = append(w, fmt.Sprintf("%02d:%02d-%02d:%02d", c.From/60, c.From%60, c.To/60, c.To%60))
		}
		out = append(out, "open "+strings.Join(w, " ")+" "+c.Location.String())
	}
	if c.Rate > 0 {
		out = append(out, "rate "+c.spec+" per agent")
	}
	if c.MaxBody > 0 {
		out = append(out, "request body at most "+strconv.FormatInt(c.MaxBody, 10)+" bytes")
	}
	if c.DailyTokens > 0 {
		out = append(out, "at most "+strconv.FormatInt(c.DailyTokens, 10)+" LLM tokens per day ("+c.Location.String()+")")
	}
	return out
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// conditionKeys are the rule keys that set Conditions.
var conditionKeys = []string{"days", "hours", "timezone", "rate", "max_body", "daily_tokens"}

// conditions reads a rule's conditions; nil when it has none.
func (c *checker) conditions(t map[string]any, path string) *Conditions {
	if !slices.ContainsFunc(conditionKeys, func(k string) bool { _, ok := t[k]; return ok }) {
		return nil
	}
	cond := &Conditions{Location: time.UTC}
	if tz, ok := c.str(t, path, "timezone", false); ok {
		loc, err := loadLocation(tz)
		if err != nil {
			c.errf(childPath(path, "timezone"), "unknown time zone %s (want an IANA name such as \"Europe/Berlin\")", quoteValue(tz))
		} else {
			cond.Location = loc
		}
	}
	days := c.stringList(t, path, "days", func(s string) (string, bool) {
		return s, slices.Contains(dayNames, strings.ToLower(s))
	}, "invalid day %s (want mon, tue, wed, thu, fri, sat or sun)")
	for _, d := range days {
		cond.Days |= 1 << slices.Index(dayNames, strings.ToLower(d))
	}
	if h, ok := c.str(t, path, "hours", false); ok {
		from, to, ok := parseHours(h)
		if !ok {
			c.errf(childPath(path, "hours"), "invalid hours %s (want \"HH:MM-HH:MM\", e.g. \"09:00-17:30\"; 24:00 ends at midnight)", quoteValue(h))
		} else {
			cond.From, cond.To, cond.HasHours = from, to, true
		}
	}
	if r, ok := c.str(t, path, "rate", false); ok {
		n, per, ok := parseRate(r)
		if !ok {
			c.errf(childPath(path, "rate"), "invalid rate %s (want \"N/second\", \"N/minute\", \"N/hour\" or \"N/day\", N from 1 to 1000000)", quoteValue(r))
		} else {
			cond.Rate, cond.Per, cond.spec = n, per, r
		}
	}
	cond.MaxBody = c.positive(t, path, "max_body", 1<<40)
	cond.DailyTokens = c.positive(t, path, "daily_tokens", 1<<50)
	return cond
}

// loadLocation accepts IANA names and "UTC"; "Local" is refused, since a policy must mean the
// same on every host.
func loadLocation(tz string) (*time.Location, error) {
	if tz == "" || tz == "Local" || strings.ContainsAny(tz, "\\\x00") || strings.Contains(tz, "..") || strings.HasPrefix(tz, "/") {
		return nil, fmt.Errorf("invalid time zone")
	}
	return time.LoadLocation(tz)
}

// positive reads an optional integer in 1..limit.
func (c *checker) positive(t map[string]any, path, key string, limit int64) int64 {
	v, ok := t[key]
	if !ok {
		return 0
	}
	n, isInt := v.(int64)
	switch {
	case !isInt:
		c.errf(childPath(path, key), "expected integer, found %s", typeName(v))
	case n < 1 || n > limit:
		c.errf(childPath(path, key), "%d out of range 1..%d", n, limit)
	default:
		return n
	}
	return 0
}

// parseHours parses "HH:MM-HH:MM" into minutes after midnight. The end may be 24:00; equal
// ends are refused (an always-open window needs no hours, a never-open one no rule).
func parseHours(s string) (from, to int, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	from, ok1 := clock(strings.TrimSpace(a), false)
	to, ok2 := clock(strings.TrimSpace(b), true)
	if !ok1 || !ok2 || from == to || from == 24*60 {
		return 0, 0, false
	}
	if to == 24*60 {
		to = 0
		if from == 0 {
			return 0, 0, false
		}
	}
	return from, to, true
}

func clock(s string, end bool) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || h > 24 || h == 24 && (m != 0 || !end) {
		return 0, false
	}
	return h*60 + m, true
}

// parseRate parses "N/unit".
func parseRate(s string) (int, time.Duration, bool) {
	a, unit, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil || n < 1 || n > 1000000 {
		return 0, 0, false
	}
	per, ok := map[string]time.Duration{
		"s": time.Second, "second": time.Second,
		"m": time.Minute, "minute": time.Minute,
		"h": time.Hour, "hour": time.Hour,
		"d": 24 * time.Hour, "day": 24 * time.Hour,
	}[strings.TrimSpace(unit)]
	return n, per, ok
}
