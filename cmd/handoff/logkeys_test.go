package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// logMethods are slog.Logger's methods that take key-value pairs.
var logMethods = map[string]bool{
	"Debug": true, "Info": true, "Warn": true, "Error": true,
	"DebugContext": true, "InfoContext": true, "WarnContext": true, "ErrorContext": true,
	"Log": true, "With": true,
}

// renamedKeys are log keys for an id that the rest of the tree spells otherwise: an operator
// searching the logs for one store's or order's lines (store_id=…, order_id=…) would miss
// those.
var renamedKeys = map[string]string{"order": "order_id", "store": "store_id"}

// Every log line names an order by order_id and a store by store_id, whichever part writes
// it.
func TestLogLinesNameOrdersAndStoresByTheSameKeys(t *testing.T) {
	root := "../.."
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !logMethods[sel.Sel.Name] {
				return true
			}
			start := 1 // after the message
			switch {
			case sel.Sel.Name == "With":
				start = 0
			case strings.HasSuffix(sel.Sel.Name, "Context"):
				start = 2 // after the context and the message
			case sel.Sel.Name == "Log":
				start = 3 // after the context, the level and the message
			}
			// As slog reads them: a string key and its value, or one slog attribute.
			for i := start; i < len(call.Args); i++ {
				if attr, ok := call.Args[i].(*ast.CallExpr); ok && isSlogCall(attr) {
					if len(attr.Args) > 0 {
						checkKey(t, fset, attr.Args[0])
					}
					continue
				}
				checkKey(t, fset, call.Args[i])
				i++ // its value
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("%d Go files checked: the walk missed the tree?", checked)
	}
}

// isSlogCall reports whether call is slog.Something(…): an attribute.
func isSlogCall(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "slog"
}

// checkKey fails t when key is a string literal spelt as renamedKeys forbids.
func checkKey(t *testing.T, fset *token.FileSet, key ast.Expr) {
	t.Helper()
	lit, ok := key.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return
	}
	k, err := strconv.Unquote(lit.Value)
	if err != nil {
		return
	}
	if want, bad := renamedKeys[k]; bad {
		t.Errorf("%s: log key %q: every other line names an order order_id and a store store_id (want %q; a key for something else needs a name of its own)", fset.Position(lit.Pos()), k, want)
	}
}
