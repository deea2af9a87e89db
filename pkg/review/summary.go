package review

// Summary is a timeline in one line of counts, as a list of incidents
// shows it.
type Summary struct {
	// Signals counts the signals decided on (or never decided) in the
	// timeline; Occurrences is the incident's last recorded count and
	// Flaps its last recorded number of reopenings.
	Signals, Occurrences, Flaps int64
	// Decisions counts the rows of stages after the receiver: every
	// decision, storm event, write and dead letter recorded.
	Decisions int
	// Writes counts the request's creates and status writes.
	Writes int
	// Environment and Priority are what the writer classified the
	// request as when it created it.
	Environment, Priority string
}

// Summarize counts t's rows.
func (t *Timeline) Summarize() Summary {
	s := Summary{Environment: t.environment, Priority: t.priority}
	for _, r := range t.Rows {
		if r.Stage != StageReceiver {
			s.Decisions++
		}
		switch r.Event {
		case EventNew, EventDuplicate, EventResolved, EventReopened, EventUndecided:
			s.Signals++
			s.Occurrences = max(s.Occurrences, r.Count)
			s.Flaps = max(s.Flaps, r.Flaps)
		case EventRejected:
			s.Signals++
		case EventStormOpen, EventStormUp, EventStormClose:
			s.Occurrences = max(s.Occurrences, r.Count)
		case EventCreated, EventUpdated:
			s.Writes++
		}
	}
	return s
}

// Decision reports whether r is a decision a stage after the receiver
// recorded (rather than a signal received): what a timeline marks.
func (r *Row) Decision() bool { return r.Stage != StageReceiver }
