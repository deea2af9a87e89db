package bus

import "errors"

// permanentError marks a failure that no retry can fix (undecodable or
// invalid input, a forbidden write). It is decided where the error is seen.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the worker loop copies the
// message to the stage's DLQ with the reason and terminates it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err: err}
}

// IsPermanent reports whether err, or anything it wraps, was marked
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
