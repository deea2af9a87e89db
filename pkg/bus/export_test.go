package bus

// InFlight reports whether p has an output of subject and msgID on the
// connection, waiting for its acknowledgement.
func InFlight(p *Publisher, subject, msgID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flights[flightKey{subject, msgID}] != nil
}

// Joined counts the outputs of p's calls in progress that wait for
// another call's publish instead of sending their own.
func Joined(p *Publisher) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, b := range p.batches {
		n += len(b.joined)
	}
	return n
}
