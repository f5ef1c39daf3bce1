package main

// Storage vMotion. Stock vcsim's RelocateVM_Task only changes the VM's datastore list.
// Here, when the spec names a datastore, every disk of the VM that lies on another
// datastore is copied to "[target] <vm name>/<file>" (only non-zero 1 MiB blocks are
// written: thin stays thin) and the disk's backing is switched to the copy; the VM keeps
// running. The copy runs with the VM locked, as a real host's mirror driver makes the
// switch atomic: guest operations on the VM (all the guest writes vcsim knows) wait
// meanwhile, so the copy equals the disk's last state. The old files are left where they
// were (the caller decides: an Instant VM Recovery unmounts their datastore).

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func copyNonZero(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(path.Dir(dst), 0700); err != nil {
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
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < st.Size(); {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			return err
		}
		off += int64(n)
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// relocateDisks moves the VM's disks to the datastore it now lists first (vm locked).
func relocateDisks(vm *simulator.VirtualMachine) types.BaseMethodFault {
	if len(vm.Datastore) == 0 {
		return nil
	}
	target, ok := simulator.Map.Get(vm.Datastore[0]).(*simulator.Datastore)
	if !ok {
		return nil
	}
	for _, d := range vm.Config.Hardware.Device {
		disk, b := flatBacking(d)
		if disk == nil {
			continue
		}
		var p object.DatastorePath
		if !p.FromString(b.FileName) || p.Datastore == target.Name {
			continue
		}
		src, err := localPath(b.FileName)
		if err != nil {
			return fileFault(b.FileName, err)
		}
		newName := fmt.Sprintf("[%s] %s/%s", target.Name, vm.Name, path.Base(p.Path))
		dst, err := localPath(newName)
		if err != nil {
			return fileFault(newName, err)
		}
		if err := copyNonZero(flatName(src), flatName(dst)); err != nil {
			return fileFault(flatName(dst), err)
		}
		if err := writeDescriptor(dst, capacity(disk)/512, ""); err != nil {
			return fileFault(dst, err)
		}
		b.FileName = newName
		ref := target.Self
		b.Datastore = &ref
	}
	return nil
}
