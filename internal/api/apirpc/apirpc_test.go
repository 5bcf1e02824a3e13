package apirpc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// methodConstants reads the Method* constants from api.go's source, so a
// constant added there without a registration here fails this test.
func methodConstants(t *testing.T) map[string]string {
	t.Helper()
	files, _ := filepath.Glob("../*.go")
	consts := map[string]string{} // constant name => wire name
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		collectMethodConstants(t, f, consts)
	}
	if len(consts) == 0 {
		t.Fatal("found no Method* constants in package api")
	}
	return consts
}

func collectMethodConstants(t *testing.T, f *ast.File, consts map[string]string) {
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Method") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				consts[name.Name], _ = strconv.Unquote(lit.Value)
			}
		}
	}
}

func TestMethodsCoverEveryConstantAndServiceMethod(t *testing.T) {
	consts := methodConstants(t)
	var want []string
	service := reflect.TypeFor[api.Service]()
	for constName, wire := range consts {
		want = append(want, wire)
		goName := strings.TrimPrefix(constName, "Method")
		if _, ok := service.MethodByName(goName); !ok {
			t.Errorf("%s has no api.Service method %s", constName, goName)
		}
	}
	got := Methods()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Methods() = %v\nwant the api.go constants %v", got, want)
	}
	if service.NumMethod() != len(got) {
		t.Errorf("api.Service has %d methods, Methods() lists %d", service.NumMethod(), len(got))
	}
	if len(slices.Compact(got)) != len(Methods()) {
		t.Error("Methods() lists a method twice")
	}
}
