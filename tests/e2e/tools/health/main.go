// Judges dx-macsec-operator resources the way the GitOps tools do: Flux's kstatus
// (github.com/fluxcd/cli-utils, the library kustomize-controller uses for health checks) and
// Argo CD's Lua health scripts from examples/argocd-cm-health.yaml, run by gopher-lua (the
// interpreter Argo CD embeds).
//
// Usage: health ARGOCD_CM_YAML < objects.json
// stdin holds one object or a List (kubectl get -o json); for each object one line goes to
// stdout: KIND NAMESPACE/NAME KSTATUS ARGO
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fail("usage: health ARGOCD_CM_YAML < objects.json")
	}
	scripts := argoScripts(os.Args[1])
	input, err := io.ReadAll(os.Stdin)
	check(err)
	var doc map[string]interface{}
	check(json.Unmarshal(input, &doc))
	objects := []interface{}{doc}
	if items, ok := doc["items"].([]interface{}); ok && strings.HasSuffix(fmt.Sprint(doc["kind"]), "List") {
		objects = items
	}
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o.(map[string]interface{})}
		result, err := status.Compute(u)
		check(err)
		group := strings.Split(u.GetAPIVersion(), "/")[0]
		script, ok := scripts["resource.customizations.health."+group+"_"+u.GetKind()]
		if !ok {
			fail("no Argo CD health script for " + group + "/" + u.GetKind())
		}
		fmt.Printf("%s %s/%s %s %s\n", u.GetKind(), u.GetNamespace(), u.GetName(), result.Status, argoHealth(script, u.Object))
	}
}

// argoScripts reads the data of the argocd-cm ConfigMap in path.
func argoScripts(path string) map[string]string {
	text, err := os.ReadFile(path)
	check(err)
	var cm struct {
		Data map[string]string `json:"data"`
	}
	check(yaml.Unmarshal(text, &cm))
	return cm.Data
}

// argoHealth runs a health script with the object as global `obj`, as Argo CD does, and
// returns the status it sets.
func argoHealth(script string, obj map[string]interface{}) string {
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	check(L.DoString("local function health()\n" + script + "\nend\nresult = health()"))
	hs, ok := L.GetGlobal("result").(*lua.LTable)
	if !ok {
		fail("the health script returned no table")
	}
	return lua.LVAsString(hs.RawGetString("status"))
}

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case map[string]interface{}:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []interface{}:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(x)
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case nil:
		return lua.LNil
	default:
		fail(fmt.Sprintf("cannot pass %T to Lua", v))
		return lua.LNil
	}
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "health:", msg)
	os.Exit(2)
}
