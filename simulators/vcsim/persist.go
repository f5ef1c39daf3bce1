package main

// A persistent inventory (-state-dir), so that the simulator process can be killed and
// started again, as a vCenter restarts, in the middle of a backup.
//
// What is kept, in <state-dir>/inventory.json, written atomically (temporary file,
// fsync, rename) after every SOAP call that ran a task (and UnregisterVM), and at
// SIGTERM: every VM (its whole managed object: config with disks and their backings,
// power state, snapshot tree, layout, guest status), every snapshot object, the lists
// that link VMs into folders, pools, hosts, datastores and networks, the directories of
// the local datastores (the files stay where they are), and this main's own state: delta
// disks, snapshot records and change tracking (its block hashes are in -cbt-dir).
//
// Managed-object ids stay stable: the model is created as on the first start (the same
// calls in the same order give the same ids), every datastore gets its saved directory
// back (a local datastore's id holds its directory), the saved VMs and snapshots are put
// back under their own ids, and govmomi's private id counter is moved past every saved
// id by registering and removing probe objects. Not kept: sessions, tasks, property
// filters and views (a restart loses them, as vCenter's does), fault rules given at run
// time, and objects beyond VMs and snapshots created after the start (NFS or VMFS
// datastores, folders).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

var persist = struct {
	sync.Mutex
	dir   string // "" when off
	saves int
}{}

type savedList struct {
	Obj   types.ManagedObjectReference   `json:"obj"`
	Field string                         `json:"field"`
	Refs  []types.ManagedObjectReference `json:"refs"`
}

type savedSnap struct {
	Ref    types.ManagedObjectReference `json:"ref"`
	VM     types.ManagedObjectReference `json:"vm"`
	Seq    int                          `json:"seq"`
	Frozen map[int32]string             `json:"frozen"`
	Delta  map[int32]string             `json:"delta"`
	Vmsn   string                       `json:"vmsn"`
}

type savedDelta struct {
	VM     types.ManagedObjectReference `json:"vm"`
	Parent string                       `json:"parent"`
}

type savedTrack struct {
	VM      types.ManagedObjectReference `json:"vm"`
	Key     int32                        `json:"key"`
	Epoch   string                       `json:"epoch"`
	Seq     int                          `json:"seq"`
	Records map[string]cbtRecordJSON     `json:"records"`
}

type cbtRecordJSON struct {
	File     string `json:"file"`
	Capacity int64  `json:"capacity"`
}

type savedState struct {
	Datastores map[string]string     `json:"datastores"` // name -> directory
	DSRefs     map[string]string     `json:"ds_refs"`    // name -> moref value
	MaxID      int64                 `json:"max_id"`
	Lists      []savedList           `json:"lists"`
	VMs        []string              `json:"vms"`       // XML of mo.VirtualMachine
	Snapshots  []string              `json:"snapshots"` // XML of mo.VirtualMachineSnapshot
	Snaps      []savedSnap           `json:"snaps"`
	SnapSeq    int                   `json:"snap_seq"`
	Deltas     map[string]savedDelta `json:"deltas"`
	Tracks     []savedTrack          `json:"tracks"`
}

// linkFields are the reference lists that tie VMs into the rest of the inventory.
var linkFields = []string{"ChildEntity", "Vm"}

// allObjects lists every object in the registry (govmomi only lists entities).
func allObjects() []mo.Reference {
	v := reflect.ValueOf(simulator.Map).Elem()
	mu := (*sync.Mutex)(unsafe.Pointer(v.FieldByName("m").UnsafeAddr()))
	f := v.FieldByName("objects")
	m := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	mu.Lock()
	defer mu.Unlock()
	var out []mo.Reference
	it := m.MapRange()
	for it.Next() {
		out = append(out, it.Value().Interface().(mo.Reference))
	}
	return out
}

func idNumber(value string) int64 {
	i := strings.LastIndexByte(value, '-')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(value[i+1:], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func encodeXML(v interface{}) (string, error) {
	var b bytes.Buffer
	if err := xml.NewEncoder(&b).Encode(v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// saveState writes the inventory; a no-op without -state-dir.
func saveState() {
	persist.Lock()
	defer persist.Unlock()
	if persist.dir == "" {
		return
	}
	st := savedState{Datastores: map[string]string{}, DSRefs: map[string]string{},
		Deltas: map[string]savedDelta{}}
	for _, ds := range datastores() {
		if _, ok := ds.Info.(*types.LocalDatastoreInfo); ok {
			st.Datastores[ds.Name] = ds.Info.GetDatastoreInfo().Url
			st.DSRefs[ds.Name] = ds.Self.Value
		}
	}
	for _, obj := range allObjects() {
		ref := obj.Reference()
		switch o := obj.(type) {
		case *simulator.VirtualMachine:
			var s string
			var err error
			simulator.Map.WithLock(o, func() {
				c := o.VirtualMachine
				c.Value, c.CustomValue, c.ConfigIssue = nil, nil, nil // untyped interfaces
				s, err = encodeXML(&c)
			})
			if err != nil {
				log.Printf("persist: encoding %s: %s", ref, err)
				return
			}
			st.VMs = append(st.VMs, s)
			st.MaxID = maxID(st.MaxID, ref)
			for _, r := range o.RootSnapshot {
				st.MaxID = maxID(st.MaxID, r)
			}
			continue
		case *simulator.VirtualMachineSnapshot:
			c := o.VirtualMachineSnapshot
			c.Value = nil
			s, err := encodeXML(&c)
			if err != nil {
				log.Printf("persist: encoding %s: %s", ref, err)
				return
			}
			st.Snapshots = append(st.Snapshots, s)
			st.MaxID = maxID(st.MaxID, ref)
			continue
		}
		if _, ok := obj.(mo.Entity); !ok {
			continue
		}
		v := reflect.ValueOf(obj).Elem()
		for _, name := range linkFields {
			if f := fieldByName(v, name); f.IsValid() {
				refs := append([]types.ManagedObjectReference(nil), f.Interface().([]types.ManagedObjectReference)...)
				st.Lists = append(st.Lists, savedList{Obj: ref, Field: name, Refs: refs})
			}
		}
	}
	snaps.Lock()
	st.SnapSeq = snaps.seq
	for ref, s := range snaps.m {
		st.Snaps = append(st.Snaps, savedSnap{Ref: ref, VM: s.vm, Seq: s.seq, Frozen: s.frozen, Delta: s.delta, Vmsn: s.vmsn})
	}
	snaps.Unlock()
	deltas.Lock()
	for flat, d := range deltas.m {
		st.Deltas[flat] = savedDelta{VM: d.vm, Parent: d.parent}
	}
	deltas.Unlock()
	cbt.Lock()
	for vm, disks := range cbt.vms {
		for key, d := range disks {
			t := savedTrack{VM: vm, Key: key, Epoch: d.epoch, Seq: d.seq, Records: map[string]cbtRecordJSON{}}
			for id, r := range d.records {
				t.Records[id] = cbtRecordJSON{File: r.file, Capacity: r.capacity}
			}
			st.Tracks = append(st.Tracks, t)
		}
	}
	cbt.Unlock()
	data, err := json.Marshal(&st)
	if err == nil {
		err = writeAtomic(filepath.Join(persist.dir, "inventory.json"), data)
	}
	if err != nil {
		log.Printf("persist: %s", err)
		return
	}
	persist.saves++
}

func maxID(cur int64, ref types.ManagedObjectReference) int64 {
	if n := idNumber(ref.Value); n > cur {
		return n
	}
	return cur
}

// fieldByName finds a []ManagedObjectReference field, also in embedded structs.
func fieldByName(v reflect.Value, name string) reflect.Value {
	f := v.FieldByName(name)
	if f.IsValid() && f.Type() == reflect.TypeOf([]types.ManagedObjectReference(nil)) {
		return f
	}
	return reflect.Value{}
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mutating says whether a SOAP method changes the inventory (the state is saved after it).
func mutating(method string) bool {
	return strings.HasSuffix(method, "_Task") || method == "UnregisterVM"
}

// restoreState loads <dir>/inventory.json into the freshly created model, if there is
// one; it returns whether it did. Called before the server starts.
func restoreState(dir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "inventory.json"))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(dir, "inventory.json"), err)
	}
	if err := restoreDatastores(&st); err != nil {
		return false, err
	}
	saved := map[types.ManagedObjectReference]bool{}
	for _, s := range st.VMs {
		var m mo.VirtualMachine
		if err := decodeXML(s, &m); err != nil {
			return false, err
		}
		saved[m.Self] = true
		if cur, ok := simulator.Map.Get(m.Self).(*simulator.VirtualMachine); ok {
			cur.VirtualMachine = m
			cur.Summary.Vm = &cur.Self
			continue
		}
		vm := &simulator.VirtualMachine{VirtualMachine: m}
		vm.Summary.Vm = &vm.Self
		simulator.Map.Put(vm)
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		if !saved[obj.Reference()] { // made by the model, destroyed before the restart
			simulator.Map.Remove(obj.Reference())
		}
	}
	for _, s := range st.Snapshots {
		var m mo.VirtualMachineSnapshot
		if err := decodeXML(s, &m); err != nil {
			return false, err
		}
		simulator.Map.Put(&simulator.VirtualMachineSnapshot{VirtualMachineSnapshot: m})
	}
	for _, l := range st.Lists {
		obj := simulator.Map.Get(l.Obj)
		if obj == nil {
			return false, fmt.Errorf("saved inventory names %s, which the model did not create", l.Obj)
		}
		var refs []types.ManagedObjectReference
		for _, r := range l.Refs {
			if simulator.Map.Get(r) != nil { // objects not kept are dropped
				refs = append(refs, r)
			}
		}
		if f := fieldByName(reflect.ValueOf(obj).Elem(), l.Field); f.IsValid() {
			f.Set(reflect.ValueOf(refs))
		}
	}
	snaps.seq = st.SnapSeq
	for _, s := range st.Snaps {
		snaps.m[s.Ref] = &snapInfo{vm: s.VM, seq: s.Seq, frozen: s.Frozen, delta: s.Delta, vmsn: s.Vmsn}
	}
	for flat, d := range st.Deltas {
		deltas.m[flat] = sparseDelta{vm: d.VM, parent: d.Parent}
	}
	for _, t := range st.Tracks {
		if cbt.vms[t.VM] == nil {
			cbt.vms[t.VM] = map[int32]*diskTrack{}
		}
		d := &diskTrack{epoch: t.Epoch, seq: t.Seq, records: map[string]*cbtRecord{}}
		for id, r := range t.Records {
			d.records[id] = &cbtRecord{file: r.File, capacity: r.Capacity}
		}
		cbt.vms[t.VM][t.Key] = d
	}
	advanceCounter(st.MaxID)
	return true, nil
}

func decodeXML(s string, v interface{}) error {
	dec := xml.NewDecoder(strings.NewReader(s))
	dec.TypeFunc = types.TypeFunc()
	return dec.Decode(v)
}

type counterProbe struct {
	Self types.ManagedObjectReference
}

func (p *counterProbe) Reference() types.ManagedObjectReference { return p.Self }

// advanceCounter moves govmomi's private id counter past n: new objects must not take
// the id of a restored one.
func advanceCounter(n int64) {
	for {
		p := &counterProbe{}
		simulator.Map.Put(p)
		simulator.Map.Remove(p.Self)
		if idNumber(p.Self.Value) >= n {
			return
		}
	}
}
