package main

// Output of the command-line client: records as "field: value" lines, key
// lists as a table, verify answers, and --json pretty printing.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode"
)

// recordFields is the order in which a key record's fields are printed;
// fields the server adds beyond these follow, sorted.
var recordFields = []string{
	"id", "name", "workspace_id", "owner_id", "type", "environment",
	"preview", "key_prefix", "key_suffix",
	"scopes", "allowed_origins", "allowed_resources", "rate_limit_per_min", "metadata",
	"active", "expires_at", "created_at", "updated_at", "created_by",
	"revoked_at", "last_used_at", "usage_count", "rotation", "imported",
}

// verifyFields is the order of a verify answer's fields; absent ones are skipped.
var verifyFields = []string{
	"valid", "code", "message", "key_id", "workspace_id", "owner_id", "type",
	"environment", "scopes", "metadata", "expires_at", "ratelimit",
}

const storeKeyWarning = "Store this key now: it is shown only once."

// decodeObject decodes a JSON object keeping numbers exact.
func decodeObject(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, fmt.Errorf("unexpected answer from the server: %s", snippet(raw))
	}
	return m, nil
}

// printJSON pretty prints raw JSON (2-space indent) to stdout.
func printJSON(e cliEnv, raw []byte) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		raw = []byte("null")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server: %s", snippet(raw)))
	}
	buf.WriteByte('\n')
	e.Stdout.Write(buf.Bytes())
	return 0
}

// printRecordData prints the data of a call that answers one record.
func printRecordData(e cliEnv, jsonOut bool, data []byte) int {
	if jsonOut {
		return printJSON(e, data)
	}
	rec, err := decodeObject(data)
	if err != nil {
		return report(e.Stderr, err)
	}
	printRecord(e.Stdout, rec)
	return 0
}

// printKeyWithSecret prints the answer of create or rotate: the record, then
// the plaintext key on stdout, and a warning that it is shown once on stderr.
func printKeyWithSecret(e cliEnv, jsonOut bool, data []byte) int {
	if jsonOut {
		code := printJSON(e, data)
		if code == 0 {
			fmt.Fprintln(e.Stderr, storeKeyWarning)
		}
		return code
	}
	rec, err := decodeObject(data)
	if err != nil {
		return report(e.Stderr, err)
	}
	printRecord(e.Stdout, rec)
	key, _ := rec["key"].(string)
	if key == "" {
		fmt.Fprintln(e.Stderr, "keyraft: the server's answer holds no key")
		return 1
	}
	fmt.Fprintf(e.Stdout, "\nkey: %s\n", clean(key))
	fmt.Fprintln(e.Stderr, storeKeyWarning)
	return 0
}

// printRecord prints a key record as aligned "field: value" lines. The
// plaintext "key" of create and rotate is left out: the caller prints it.
func printRecord(w io.Writer, rec map[string]any) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	known := map[string]bool{"key": true}
	for _, f := range recordFields {
		known[f] = true
		v := formatValue(rec[f])
		if f == "rate_limit_per_min" && v == "0" {
			v = "0 (unlimited)"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", f, v)
	}
	for _, f := range extraFields(rec, known) {
		fmt.Fprintf(tw, "%s:\t%s\n", clean(f), formatValue(rec[f]))
	}
	tw.Flush()
}

func extraFields(m map[string]any, known map[string]bool) []string {
	var out []string
	for f := range m {
		if !known[f] {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// printKeyTable prints records as a table, one key a line.
func printKeyTable(w io.Writer, records []json.RawMessage) error {
	if len(records) == 0 {
		return nil
	}
	rows := make([]map[string]any, 0, len(records))
	for _, raw := range records {
		rec, err := decodeObject(raw)
		if err != nil {
			return err
		}
		rows = append(rows, rec)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tWORKSPACE\tTYPE\tENV\tPREVIEW\tACTIVE\tREVOKED\tLAST USED")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			formatValue(r["id"]), formatValue(r["name"]), formatValue(r["workspace_id"]),
			formatValue(r["type"]), formatValue(r["environment"]), formatValue(r["preview"]),
			formatValue(r["active"]), formatValue(r["revoked_at"]), formatValue(r["last_used_at"]))
	}
	return tw.Flush()
}

// printVerify prints a verify answer and returns 0 when the key is valid, 1
// when it is not or the call failed.
func printVerify(e cliEnv, jsonOut bool, r *response) int {
	m, err := decodeObject(r.Body)
	valid, isVerify := m["valid"].(bool)
	if err != nil || !isVerify {
		if r.Status < 200 || r.Status > 299 {
			return report(e.Stderr, errorFromResponse(r.Status, r.Header, r.Body))
		}
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server (HTTP %d): %s", r.Status, snippet(r.Body)))
	}
	rotated := strings.EqualFold(r.Header.Get("Keyraft-Key-Rotated"), "true")
	if jsonOut {
		if code := printJSON(e, r.Body); code != 0 {
			return code
		}
	} else {
		tw := tabwriter.NewWriter(e.Stdout, 0, 0, 1, ' ', 0)
		known := map[string]bool{}
		for _, f := range verifyFields {
			known[f] = true
			if v, ok := m[f]; ok {
				fmt.Fprintf(tw, "%s:\t%s\n", f, formatValue(v))
			}
		}
		for _, f := range extraFields(m, known) {
			fmt.Fprintf(tw, "%s:\t%s\n", clean(f), formatValue(m[f]))
		}
		if rotated {
			fmt.Fprintf(tw, "rotated:\ttrue\n")
		}
		tw.Flush()
	}
	if valid {
		if rotated {
			fmt.Fprintln(e.Stderr, "keyraft: note: this token has been rotated; it stops working when its grace period ends")
		}
		return 0
	}
	code, _ := m["code"].(string)
	msg, _ := m["message"].(string)
	if code == "" {
		code = "INVALID"
	}
	if msg == "" {
		msg = "the key is not valid"
	}
	if ra := r.Header.Get("Retry-After"); ra != "" {
		msg += " (retry after " + ra + "s)"
	}
	fmt.Fprintf(e.Stderr, "keyraft: %s: %s\n", clean(code), clean(msg))
	return 1
}

// formatValue renders a decoded JSON value for a table cell: null, "" and
// empty lists or objects as "-", lists comma-separated, objects as sorted
// k=v pairs.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return clean(x)
	case bool:
		if x {
			return "true"
		}
		return "false"
	case json.Number:
		return x.String()
	case float64:
		return fmt.Sprint(x)
	case []any:
		if len(x) == 0 {
			return "-"
		}
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = formatValue(p)
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		if len(x) == 0 {
			return "-"
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = clean(k) + "=" + formatValue(x[k])
		}
		return strings.Join(parts, ", ")
	}
	return clean(fmt.Sprint(v))
}

// clean replaces control characters (tabs, newlines, terminal escapes) so a
// value from the server can neither break the table nor drive the terminal.
func clean(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}
