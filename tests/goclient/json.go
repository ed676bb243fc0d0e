package main

// json_marshal: the bytes Go's encoding/json.Marshal writes, for evetcd's gojson module to
// match byte for byte (tests/gojson.rs). The service registry (naming/endpoints) stores
// values written by json.Marshal.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

func init() {
	plainCommands["json_marshal"] = (*helper).jsonMarshal
}

// jsonMarshal marshals c.JSON decoded into an any (float64 numbers; json.Number with
// c.UseNumber), or, with c.StringHex, a Go string holding those raw bytes (which need not
// be UTF-8). The result is hex, so that the JSON line carrying it cannot change a byte.
func (h *helper) jsonMarshal(c *command) (obj, error) {
	var v any
	if c.StringHex != nil {
		raw, err := hex.DecodeString(*c.StringHex)
		if err != nil {
			return nil, fmt.Errorf("string_hex: %w", err)
		}
		v = string(raw)
	} else {
		dec := json.NewDecoder(strings.NewReader(c.JSON))
		if c.UseNumber {
			dec.UseNumber()
		}
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("json: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("json: more than one value in %q", c.JSON)
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return obj{"bytes_hex": hex.EncodeToString(out)}, nil
}
