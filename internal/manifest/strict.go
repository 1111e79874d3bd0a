package manifest

import (
	"fmt"
	"math"
	"sort"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkMessage checks a decoded JSON object against a message descriptor:
// every key must be the JSON name of a field, and every value must have
// the JSON type of its field. It returns one message per problem, each
// naming the field by its path (like spec.controlPlane.replicas). Value
// ranges and formats are left to protojson.
func checkMessage(path string, obj map[string]any, md protoreflect.MessageDescriptor) []string {
	var errs []string
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			errs = append(errs, unknownField(path, k))
			continue
		}
		errs = append(errs, checkField(join(path, k), obj[k], fd)...)
	}
	return errs
}

// unknownField is the message for an unknown key k of the object at path.
func unknownField(path, k string) string {
	if path == "" {
		return fmt.Sprintf("unknown field %q", k)
	}
	return fmt.Sprintf("unknown field %q in %s", k, path)
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// checkField checks the JSON value of one field; null is always accepted.
func checkField(path string, v any, fd protoreflect.FieldDescriptor) []string {
	switch {
	case v == nil:
		return nil
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			return []string{mismatch(path, "a list", v)}
		}
		var errs []string
		for i, e := range list {
			if e == nil {
				errs = append(errs, fmt.Sprintf("%s[%d]: must not be null", path, i))
				continue
			}
			errs = append(errs, checkValue(fmt.Sprintf("%s[%d]", path, i), e, fd)...)
		}
		return errs
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if !ok {
			return []string{mismatch(path, "a mapping", v)}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var errs []string
		for _, k := range keys {
			if m[k] == nil {
				errs = append(errs, path+"."+k+": must not be null")
				continue
			}
			errs = append(errs, checkValue(path+"."+k, m[k], fd.MapValue())...)
		}
		return errs
	}
	return checkValue(path, v, fd)
}

// checkValue checks one value (of a field, list element or map entry);
// null is accepted only for messages.
func checkValue(path string, v any, fd protoreflect.FieldDescriptor) []string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName().Parent() == "google.protobuf" {
			// Well-known types (timestamps) are strings; protojson checks them.
			if _, ok := v.(string); !ok {
				return []string{mismatch(path, "a string", v)}
			}
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			if v == nil {
				return nil
			}
			return []string{mismatch(path, "a mapping", v)}
		}
		return checkMessage(path, m, fd.Message())
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			return []string{mismatch(path, "a string", v)}
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			return []string{mismatch(path, "true or false", v)}
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return checkInt(path, v, math.MinInt32, math.MaxInt32)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return checkInt(path, v, 0, math.MaxUint32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return checkInt(path, v, math.Inf(-1), math.Inf(1)) // protojson checks the range
	}
	return nil
}

// checkInt checks an integer, given as a JSON number or a decimal string
// (protojson accepts both), that must lie within min..max.
func checkInt(path string, v any, min, max float64) []string {
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case string:
		i, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			u, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return []string{mismatch(path, "an integer", v)}
			}
			return checkInt(path, float64(u), min, max)
		}
		n = float64(i)
	default:
		return []string{mismatch(path, "an integer", v)}
	}
	switch {
	case n != math.Trunc(n):
		return []string{mismatch(path, "an integer", v)}
	case n < min || n > max:
		return []string{fmt.Sprintf("%s: must be an integer from %.0f to %.0f, got %s", path, min, max, describeValue(v))}
	}
	return nil
}

// mismatch is the message for a value of the wrong JSON type.
func mismatch(path, want string, got any) string {
	return fmt.Sprintf("%s: must be %s, got %s", path, want, describeValue(got))
}

// describeValue names a decoded JSON value for error messages.
func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		if math.Abs(v) < 1e21 {
			return "number " + strconv.FormatFloat(v, 'f', -1, 64)
		}
		return "number " + strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%v", v)
}
