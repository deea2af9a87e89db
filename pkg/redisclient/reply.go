package redisclient

import "strconv"

// String reads a Lua script's reply element as a string: Redis turns Lua
// strings into bulk strings and Lua numbers into integers, and a script
// may return either for the same field.
func String(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

// Int reads a Lua script's reply element as an integer (see String); 0
// when it is neither a number nor a numeric string.
func Int(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}
