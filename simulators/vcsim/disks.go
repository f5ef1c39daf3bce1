package main

// Disk content and point-in-time snapshots.
//
// Every disk "[DS] dir/name.vmdk" keeps its bytes in "dir/name-flat.vmdk" (monolithic
// flat, as on ESX), a sparse file of the disk's capacity. CreateSnapshot freezes the
// current file: the snapshot's config keeps pointing at it, and the VM's backing moves
// to a new delta "dir/<stem>-00000N.vmdk". The delta is copy-on-write: its -flat
// starts as an empty sparse file of the disk's capacity and holds only the blocks the
// guest writes afterwards (a write first copies the parent's part of the file system
// blocks it touches, so an allocated block of the delta is whole); a hole in the delta
// reads through to its parent. So a snapshot costs nothing whatever the disk's size,
// and a frozen file is never written while its snapshot lives.
//
// Invariant: only the VM's current delta is sparse; a file frozen by a snapshot is
// always whole (a sparse delta is materialized — its holes filled from its parent —
// before a later snapshot freezes it), so readers of a snapshot (HTTPS GET, or the
// datastore's directory) read one plain file. Consumers that need the live disk as one
// plain file (debugfs guest operations, CBT hashing of the live disk, a clone)
// materialize it first; the Python side (simulators/vcsim.py) does the block copy for
// its guest writes and materializes for readers of the live disk.
//
// Removing snapshot S consolidates: a sparse delta's data extents are written into S's
// frozen file (cost: what the guest wrote), a whole delta is renamed over it; every
// reference to the delta is replaced by the frozen name. Linear chains are exact;
// after reverting to an older snapshot (a branch) consolidation is best effort.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type snapInfo struct {
	vm     types.ManagedObjectReference
	seq    int
	frozen map[int32]string // disk key -> datastore path frozen by this snapshot
	delta  map[int32]string // disk key -> delta created when this snapshot was taken
	vmsn   string           // local path of the .vmsn file vcsim created
}

var snaps = struct {
	sync.Mutex
	seq int
	m   map[types.ManagedObjectReference]*snapInfo
}{m: map[types.ManagedObjectReference]*snapInfo{}}

func reflectNew(t reflect.Type) interface{} { return reflect.New(t).Interface() }

// deepCopy copies pointers, slices, interfaces and exported struct fields, so that a
// snapshot's device list shares nothing with the VM's (vcsim's own snapshot config
// is a shallow copy: editing the VM would edit the snapshot).
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Ptr:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Elem().Type())
		n.Elem().Set(deepCopy(v.Elem()))
		return n
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Type()).Elem()
		n.Set(deepCopy(v.Elem()))
		return n
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(deepCopy(v.Index(i)))
		}
		return n
	case reflect.Struct:
		n := reflect.New(v.Type()).Elem()
		n.Set(v)
		for i := 0; i < v.NumField(); i++ {
			if n.Field(i).CanSet() {
				n.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return n
	}
	return v
}

func copyDevices(devs []types.BaseVirtualDevice) []types.BaseVirtualDevice {
	return deepCopy(reflect.ValueOf(devs)).Interface().([]types.BaseVirtualDevice)
}

func flatBacking(d types.BaseVirtualDevice) (*types.VirtualDisk, *types.VirtualDiskFlatVer2BackingInfo) {
	disk, ok := d.(*types.VirtualDisk)
	if !ok {
		return nil, nil
	}
	b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return nil, nil
	}
	return disk, b
}

// localPath maps "[DS] dir/x.vmdk" to the file in the datastore directory.
func localPath(dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("invalid datastore path %q", dsPath)
	}
	ds := datastoreByName(p.Datastore)
	if ds == nil {
		return "", fmt.Errorf("datastore %q not found", p.Datastore)
	}
	return path.Join(ds.Info.GetDatastoreInfo().Url, p.Path), nil
}

func flatName(p string) string { return strings.TrimSuffix(p, ".vmdk") + "-flat.vmdk" }

func capacity(disk *types.VirtualDisk) int64 {
	if disk.CapacityInBytes > 0 {
		return disk.CapacityInBytes
	}
	return disk.CapacityInKB * 1024
}

func fileFault(file string, err error) types.BaseMethodFault {
	logf("file error on %s: %s", file, err)
	return &types.FileFault{File: file}
}

// writeDescriptor writes a small VMDK text descriptor when the file is empty, so the
// .vmdk looks like ESX's (createType vmfs: extent in the -flat file).
func writeDescriptor(local string, sectors int64, parent string) error {
	if st, err := os.Stat(local); err == nil && st.Size() > 0 {
		return nil
	}
	parentLine := ""
	if parent != "" {
		parentLine = fmt.Sprintf("parentFileNameHint=%q\n", path.Base(parent))
	}
	text := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n"+
		"parentCID=ffffffff\ncreateType=\"vmfs\"\n%s\n# Extent description\nRW %d VMFS %q\n",
		parentLine, sectors, path.Base(flatName(local)))
	return os.WriteFile(local, []byte(text), 0600)
}

// ensureDiskFiles gives every disk of vm a -flat file of its capacity (sparse).
// Grows, never shrinks, so it is safe after any reconfigure.
func ensureDiskFiles(vm *simulator.VirtualMachine) types.BaseMethodFault {
	if vm.Config == nil {
		return nil
	}
	for _, d := range vm.Config.Hardware.Device {
		disk, b := flatBacking(d)
		if disk == nil {
			continue
		}
		local, err := localPath(b.FileName)
		if err != nil {
			return fileFault(b.FileName, err)
		}
		size := capacity(disk)
		flat := flatName(local)
		f, err := os.OpenFile(flat, os.O_RDWR|os.O_CREATE, 0600)
		if err != nil {
			return fileFault(flat, err)
		}
		st, err := f.Stat()
		if err == nil && st.Size() < size {
			err = f.Truncate(size)
		}
		_ = f.Close()
		if err != nil {
			return fileFault(flat, err)
		}
		if err := writeDescriptor(local, size/512, ""); err != nil {
			return fileFault(local, err)
		}
	}
	return nil
}

// copySparse copies src to dst (replacing it atomically) copying only data extents
// (SEEK_DATA/SEEK_HOLE; io.Copy between files uses copy_file_range on Linux).
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".dpflow-tmp"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0600)
	if err != nil {
		return err
	}
	defer func() {
		_ = out.Close()
		_ = os.Remove(tmp)
	}()
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	const seekData, seekHole = 3, 4
	for off := int64(0); off < size; {
		data, err := in.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break // only a hole remains
			}
			return err
		}
		hole, err := in.Seek(data, seekHole)
		if err != nil {
			return err
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.Copy(out, &io.LimitedReader{R: in, N: hole - data}); err != nil {
			return err
		}
		off = hole
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

var deltaSuffix = regexp.MustCompile(`-\d{6}$`)

// nextDelta picks "[DS] dir/<stem>-00000N.vmdk" with the lowest free N, stem being
// the root disk's name (as ESX names chains: disk-000001, disk-000002, ...).
func nextDelta(current string) (string, string, error) {
	dir, base := path.Split(current)
	stem := deltaSuffix.ReplaceAllString(strings.TrimSuffix(base, ".vmdk"), "")
	for n := 1; n < 1000000; n++ {
		name := fmt.Sprintf("%s%s-%06d.vmdk", dir, stem, n)
		local, err := localPath(name)
		if err != nil {
			return "", "", err
		}
		_, e1 := os.Stat(local)
		_, e2 := os.Stat(flatName(local))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			return name, local, nil
		}
	}
	return "", "", fmt.Errorf("no free delta name for %s", current)
}

// newDelta creates an empty copy-on-write delta of parent (a datastore path) for vm
// and returns its datastore path.
func newDelta(vm types.ManagedObjectReference, parent string, size int64) (string, error) {
	name, local, err := nextDelta(parent)
	if err != nil {
		return "", err
	}
	plocal, err := localPath(parent)
	if err != nil {
		return "", err
	}
	if err := emptyDelta(vm, flatName(local), flatName(plocal), size); err != nil {
		return "", err
	}
	if err := writeDescriptor(local, size/512, parent); err != nil {
		return "", err
	}
	return name, nil
}

func afterCreateSnapshot(vmRef, snapRef types.ManagedObjectReference) types.BaseMethodFault {
	vm := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	snap := simulator.Map.Get(snapRef).(*simulator.VirtualMachineSnapshot)

	info := &snapInfo{vm: vmRef, frozen: map[int32]string{}, delta: map[int32]string{}}
	for _, s := range vm.LayoutEx.Snapshot {
		if s.Key == snapRef {
			for _, f := range vm.LayoutEx.File {
				if f.Key == s.DataKey {
					info.vmsn, _ = localPath(f.Name)
				}
			}
		}
	}

	snap.Config.Hardware.Device = copyDevices(vm.Config.Hardware.Device)
	devices := copyDevices(vm.Config.Hardware.Device)
	for _, d := range devices {
		disk, b := flatBacking(d)
		if disk == nil {
			continue
		}
		if fl, err := localPath(b.FileName); err != nil {
			return fileFault(b.FileName, err)
		} else if err := materialize(flatName(fl)); err != nil {
			return fileFault(b.FileName, err) // the file to freeze must be whole
		}
		delta, err := newDelta(vmRef, b.FileName, capacity(disk))
		if err != nil {
			return fileFault(b.FileName, err)
		}
		parent := *b
		info.frozen[disk.Key] = b.FileName
		info.delta[disk.Key] = delta
		b.Parent = &parent
		b.FileName = delta
	}
	snaps.Lock()
	snaps.seq++
	info.seq = snaps.seq
	snaps.m[snapRef] = info
	snaps.Unlock()

	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
	vm.RefreshStorageInfo(nil, nil)
	return nil
}

// subtree lists ref and (if children) its descendants from the VM's snapshot tree.
func subtree(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference, children bool) []types.ManagedObjectReference {
	var walk func([]types.VirtualMachineSnapshotTree, bool) []types.ManagedObjectReference
	walk = func(t []types.VirtualMachineSnapshotTree, in bool) []types.ManagedObjectReference {
		var out []types.ManagedObjectReference
		for _, n := range t {
			hit := in || n.Snapshot == ref
			if hit {
				out = append(out, n.Snapshot)
			}
			out = append(out, walk(n.ChildSnapshotList, hit && children)...)
		}
		return out
	}
	return walk(tree, false)
}

// dropSnapshotLayout removes the .vmsn file and the layout entries of the given
// snapshots ourselves: vcsim's own removal deletes files by stale layout keys
// (create s1, s2, remove s2, remove s1 deleted the VM's disk descriptor).
func dropSnapshotLayout(vm *simulator.VirtualMachine, refs []types.ManagedObjectReference) {
	drop := map[types.ManagedObjectReference]bool{}
	for _, r := range refs {
		drop[r] = true
		snaps.Lock()
		if info := snaps.m[r]; info != nil && info.vmsn != "" {
			_ = os.Remove(info.vmsn)
		}
		snaps.Unlock()
	}
	var layout []types.VirtualMachineFileLayoutSnapshotLayout
	for _, s := range vm.Layout.Snapshot {
		if !drop[s.Key] {
			layout = append(layout, s)
		}
	}
	vm.Layout.Snapshot = layout
	var layoutEx []types.VirtualMachineFileLayoutExSnapshotLayout
	for _, s := range vm.LayoutEx.Snapshot {
		if !drop[s.Key] {
			layoutEx = append(layoutEx, s)
		}
	}
	vm.LayoutEx.Snapshot = layoutEx
}

// renameRefs replaces datastore path from by to in a device list's disk chains and
// removes the consecutive duplicates this creates (d1 -> base -> base).
func renameRefs(devs []types.BaseVirtualDevice, from, to string) {
	for _, d := range devs {
		_, b := flatBacking(d)
		for ; b != nil; b = b.Parent {
			if b.FileName == from {
				b.FileName = to
			}
			for b.Parent != nil && b.Parent.FileName == b.FileName {
				b.Parent = b.Parent.Parent
			}
		}
	}
}

// consolidate merges the removed snapshots' deltas into their frozen files, latest
// snapshot first. Called with the VM locked, after vcsim removed them from the tree.
func consolidate(vm *simulator.VirtualMachine, removed []*snapInfo) types.BaseMethodFault {
	sort.Slice(removed, func(i, j int) bool { return removed[i].seq > removed[j].seq })
	devices := copyDevices(vm.Config.Hardware.Device)
	for _, info := range removed {
		for key, delta := range info.delta {
			frozen := info.frozen[key]
			dl, err := localPath(delta)
			if err != nil {
				return fileFault(delta, err)
			}
			fl, err := localPath(frozen)
			if err != nil {
				return fileFault(frozen, err)
			}
			if _, err := os.Stat(flatName(dl)); err != nil {
				continue // already gone (e.g. disk removed)
			}
			if err := foldDelta(flatName(dl), flatName(fl)); err != nil {
				return fileFault(delta, err)
			}
			_ = os.Remove(dl)
			renameRefs(devices, delta, frozen)
			snaps.Lock()
			for ref, other := range snaps.m {
				if other == info {
					continue
				}
				for k, v := range other.frozen {
					if v == delta {
						other.frozen[k] = frozen
					}
				}
				for k, v := range other.delta {
					if v == delta {
						other.delta[k] = frozen
					}
				}
				if s, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot); ok {
					renameRefs(s.Config.Hardware.Device, delta, frozen)
				}
			}
			snaps.Unlock()
		}
	}
	snaps.Lock()
	for ref, info := range snaps.m {
		for _, r := range removed {
			if info == r {
				delete(snaps.m, ref)
			}
		}
	}
	snaps.Unlock()
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
	vm.RefreshStorageInfo(nil, nil)
	return nil
}

func infosOf(refs []types.ManagedObjectReference) []*snapInfo {
	snaps.Lock()
	defer snaps.Unlock()
	var out []*snapInfo
	for _, r := range refs {
		if info := snaps.m[r]; info != nil {
			out = append(out, info)
		}
	}
	return out
}

func removeSnapshot(snapRef types.ManagedObjectReference, t *simulator.Task, run runFunc) (types.AnyType, types.BaseMethodFault) {
	snap, ok := simulator.Map.Get(snapRef).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return run(t)
	}
	vm := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	var before []types.ManagedObjectReference
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot != nil {
			before = subtree(vm.Snapshot.RootSnapshotList, snapRef, true)
		}
	})
	res, fault := run(t)
	if fault != nil {
		return res, fault
	}
	simulator.Map.WithLock(vm, func() {
		// What vcsim removed: the snapshot, plus its children if removeChildren.
		still := map[types.ManagedObjectReference]bool{}
		if vm.Snapshot != nil {
			for _, r := range allSnapshots(vm.Snapshot.RootSnapshotList) {
				still[r] = true
			}
		}
		var removed []types.ManagedObjectReference
		for _, r := range before {
			if !still[r] {
				removed = append(removed, r)
			}
		}
		dropSnapshotLayout(vm, removed)
		fault = consolidate(vm, infosOf(removed))
	})
	return res, fault
}

func allSnapshots(tree []types.VirtualMachineSnapshotTree) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, n := range tree {
		out = append(out, n.Snapshot)
		out = append(out, allSnapshots(n.ChildSnapshotList)...)
	}
	return out
}

func removeAllSnapshots(vmRef types.ManagedObjectReference, t *simulator.Task, run runFunc) (types.AnyType, types.BaseMethodFault) {
	vm := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	var all []types.ManagedObjectReference
	if vm.Snapshot != nil {
		all = allSnapshots(vm.Snapshot.RootSnapshotList)
	}
	infos := infosOf(all)
	dropSnapshotLayout(vm, all)
	res, fault := run(t)
	if fault != nil {
		return res, fault
	}
	return res, consolidate(vm, infos)
}

// revertTo makes the VM's current disks a fresh copy of what snapshot ref froze and
// its device list the snapshot's. Called with the VM locked.
func revertTo(vm *simulator.VirtualMachine, ref types.ManagedObjectReference) types.BaseMethodFault {
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return nil
	}
	snaps.Lock()
	info := snaps.m[ref]
	frozenAnywhere := map[string]bool{}
	for _, other := range snaps.m {
		for _, v := range other.frozen {
			frozenAnywhere[v] = true
		}
	}
	snaps.Unlock()
	if info == nil {
		return nil
	}
	current := map[int32]string{}
	for _, d := range vm.Config.Hardware.Device {
		if disk, b := flatBacking(d); disk != nil {
			current[disk.Key] = b.FileName
		}
	}
	devices := copyDevices(snap.Config.Hardware.Device)
	for _, d := range devices {
		disk, b := flatBacking(d)
		if disk == nil {
			continue
		}
		frozen := b.FileName
		cur := current[disk.Key]
		target := cur
		if cur == "" || frozenAnywhere[cur] {
			name, err := newDelta(vm.Self, frozen, capacity(disk))
			if err != nil {
				return fileFault(frozen, err)
			}
			target = name
		} else {
			fl, err1 := localPath(frozen)
			cl, err2 := localPath(cur)
			if err1 != nil || err2 != nil {
				return fileFault(cur, fmt.Errorf("bad path"))
			}
			if err := emptyDelta(vm.Self, flatName(cl), flatName(fl), capacity(disk)); err != nil {
				return fileFault(cur, err)
			}
		}
		parent := *b
		b.Parent = &parent
		b.FileName = target
	}
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
	vm.RefreshStorageInfo(nil, nil)
	return nil
}

func forgetVM(vm types.ManagedObjectReference) {
	forgetDeltas(vm)
	snaps.Lock()
	defer snaps.Unlock()
	for ref, info := range snaps.m {
		if info.vm == vm {
			delete(snaps.m, ref)
		}
	}
}

// cloneVM protects the source from vcsim's CloneVM, which blanks the file names of
// the source's own disk objects (it builds the clone's spec from them in place),
// and gives the clone a copy of the source's current disk content.
func cloneVM(vmRef types.ManagedObjectReference, t *simulator.Task, run runFunc) (types.AnyType, types.BaseMethodFault) {
	vm := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	saved := vm.Config.Hardware.Device
	vm.Config.Hardware.Device = copyDevices(saved)
	res, fault := run(t)
	vm.Config.Hardware.Device = saved
	if fault != nil {
		return res, fault
	}
	clone, ok := simulator.Map.Get(res.(types.ManagedObjectReference)).(*simulator.VirtualMachine)
	if !ok {
		return res, nil
	}
	var src, dst []string
	for _, d := range saved {
		if disk, b := flatBacking(d); disk != nil {
			src = append(src, b.FileName)
		}
	}
	for _, d := range clone.Config.Hardware.Device {
		if disk, b := flatBacking(d); disk != nil {
			dst = append(dst, b.FileName)
		}
	}
	for i := 0; i < len(src) && i < len(dst); i++ {
		sl, err1 := localPath(src[i])
		dl, err2 := localPath(dst[i])
		if err1 != nil || err2 != nil {
			return res, fileFault(dst[i], fmt.Errorf("bad path"))
		}
		if err := materialize(flatName(sl)); err != nil {
			return res, fileFault(src[i], err)
		}
		if err := copySparse(flatName(sl), flatName(dl)); err != nil {
			return res, fileFault(dst[i], err)
		}
	}
	simulator.Map.WithLock(clone, func() { fault = cbtSync(clone) })
	return res, fault
}
