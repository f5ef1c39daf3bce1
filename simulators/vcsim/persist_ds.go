package main

// The persistent inventory's datastores (see persist.go): a local datastore's id holds its
// directory, so a restart gives it back its saved directory and id.

import (
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// restoreDatastores gives every local datastore its saved directory (and with it its
// saved id): references and paths naming the fresh directory are rewritten in every
// object, and the fresh directory is removed.
func restoreDatastores(st *savedState) error {
	for _, ds := range datastores() {
		dir, ok := st.Datastores[ds.Name]
		cur := ds.Info.GetDatastoreInfo().Url
		if !ok || dir == cur {
			continue
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("datastore %s: saved directory %s is gone", ds.Name, dir)
		}
		oldRef := ds.Self
		newRef := types.ManagedObjectReference{Type: oldRef.Type, Value: st.DSRefs[ds.Name]}
		seen := map[seenKey]bool{}
		for _, obj := range allObjects() {
			rewrite(reflect.ValueOf(obj), oldRef, newRef, cur, dir, seen)
		}
		simulator.Map.Remove(oldRef)
		simulator.Map.Put(ds)
		if err := os.RemoveAll(cur); err != nil {
			return err
		}
	}
	return nil
}

// seenKey is a pointer visited by rewrite: its address and type (a struct and its first
// field share an address).
type seenKey struct {
	p uintptr
	t reflect.Type
}

// rewrite replaces, everywhere under v, the reference from by to and the path prefix
// fromDir by toDir.
func rewrite(v reflect.Value, from, to types.ManagedObjectReference, fromDir, toDir string, seen map[seenKey]bool) {
	switch v.Kind() {
	case reflect.Ptr:
		k := seenKey{v.Pointer(), v.Type()}
		if v.IsNil() || seen[k] {
			return
		}
		seen[k] = true
		rewrite(v.Elem(), from, to, fromDir, toDir, seen)
	case reflect.Interface:
		if !v.IsNil() {
			e := v.Elem()
			if e.Kind() == reflect.Ptr {
				rewrite(e, from, to, fromDir, toDir, seen)
			} else if v.CanSet() {
				c := reflect.New(e.Type()).Elem()
				c.Set(e)
				rewrite(c, from, to, fromDir, toDir, seen)
				v.Set(c)
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			rewrite(v.Index(i), from, to, fromDir, toDir, seen)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(from) {
			if v.CanSet() && v.Interface().(types.ManagedObjectReference) == from {
				v.Set(reflect.ValueOf(to))
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				rewrite(v.Field(i), from, to, fromDir, toDir, seen)
			}
		}
	case reflect.String:
		s := v.String()
		if v.CanSet() && (s == fromDir || strings.HasPrefix(s, fromDir+"/")) {
			v.SetString(toDir + strings.TrimPrefix(s, fromDir))
		}
	}
}
