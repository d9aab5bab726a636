// rules-check checks Prometheus rule files as `promtool check rules` does, with the same library code
// (model/rulefmt and promql/parser) and without building promtool, which pulls in the TSDB and every
// service-discovery SDK.
//
//	rules-check [-lint-fatal] FILE...   rule files: rulefmt's validation, then the duplicate-rules lint
//	rules-check -expr EXPR...           PromQL expressions (e.g. a Grafana dashboard's queries)
//
// Like promtool it prints "Checking FILE" and "  SUCCESS: N rules found" on stdout and the errors after
// "  FAILED:" on stderr. It exits 1 when a file or an expression has an error, 3 when the only problem
// is a duplicate rule and -lint-fatal is given (without it a duplicate is reported and not fatal).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	ok       = 0
	failed   = 1
	lintFail = 3
)

// duplicates are the rules that share a name (alert or record) and labels (the group's and the rule's
// merged) with another rule: promtool's duplicate-rules lint, its default.
func duplicates(groups []rulefmt.RuleGroup) []string {
	seen := map[string]int{}
	for _, group := range groups {
		for _, rule := range group.Rules {
			merged := map[string]string{}
			for k, v := range group.Labels {
				merged[k] = v
			}
			for k, v := range rule.Labels {
				merged[k] = v
			}
			names := make([]string, 0, len(merged))
			for k := range merged {
				names = append(names, k)
			}
			sort.Strings(names)
			key := "Metric: " + rule.Alert + rule.Record + "\nLabel(s):\n"
			for _, k := range names {
				key += fmt.Sprintf("\t%s: %s\n", k, merged[k])
			}
			seen[key]++
		}
	}
	var found []string
	for key, n := range seen {
		if n > 1 {
			found = append(found, key)
		}
	}
	sort.Strings(found)
	return found
}

func checkFile(path string, p parser.Parser, logger *slog.Logger, lintFatal bool) int {
	fmt.Println("Checking", path)
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, p, logger)
	if errs != nil {
		fmt.Fprintln(os.Stderr, "  FAILED:")
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, err)
		}
		return failed
	}
	if dups := duplicates(groups.Groups); len(dups) > 0 {
		fmt.Fprintln(os.Stderr, "  FAILED:")
		fmt.Fprintf(os.Stderr, "lint error %d duplicate rule(s) found.\n%s", len(dups), strings.Join(dups, ""))
		fmt.Fprintln(os.Stderr, "Might cause inconsistency while recording expressions")
		fmt.Println()
		if lintFatal {
			return lintFail
		}
		return ok
	}
	n := 0
	for _, group := range groups.Groups {
		n += len(group.Rules)
	}
	fmt.Printf("  SUCCESS: %d rules found\n\n", n)
	return ok
}

func main() {
	exprs := flag.Bool("expr", false, "the arguments are PromQL expressions, not rule files")
	lintFatal := flag.Bool("lint-fatal", false, "exit 3 on a duplicate rule (as promtool check rules --lint-fatal)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: rules-check [-lint-fatal] FILE... | rules-check -expr EXPR...")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{}) // promtool's parser without --enable-feature
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	status := ok
	for _, arg := range flag.Args() {
		result := ok
		if *exprs {
			if _, err := p.ParseExpr(arg); err != nil {
				fmt.Fprintf(os.Stderr, "FAILED: %q: %v\n", arg, err)
				result = failed
			}
		} else {
			result = checkFile(arg, p, logger, *lintFatal)
		}
		if result == failed || status == ok {
			status = result
		}
	}
	if status == ok && *exprs {
		fmt.Printf("SUCCESS: %d expressions parsed\n", flag.NArg())
	}
	os.Exit(status)
}
