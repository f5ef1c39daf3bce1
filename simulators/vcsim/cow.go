package main

// Copy-on-write deltas (see disks.go for the model): which delta files are still sparse
// redo files over a parent, and the three operations on them — create empty,
// materialize (fill holes from the parent: the file becomes whole), fold into the
// parent (consolidation). Their cost follows the bytes the guest wrote, or for
// materialize the parent's data, never the disk's capacity.

import (
	"io"
	"os"
	"sync"

	"github.com/vmware/govmomi/vim25/types"
)

type sparseDelta struct {
	vm     types.ManagedObjectReference
	parent string // local path of the parent's -flat file (always whole)
}

// deltas maps the local -flat path of every sparse delta to its parent.
var deltas = struct {
	sync.Mutex
	m map[string]sparseDelta
}{m: map[string]sparseDelta{}}

// emptyDelta makes flat an empty sparse file of size bytes (replacing its content)
// whose holes read through to parent.
func emptyDelta(vm types.ManagedObjectReference, flat, parent string, size int64) error {
	f, err := os.OpenFile(flat, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	deltas.Lock()
	deltas.m[flat] = sparseDelta{vm: vm, parent: parent}
	deltas.Unlock()
	return nil
}

// materialize makes flat whole if it is a sparse delta: every parent data extent that
// is a hole in flat is copied in. A no-op for any other file.
func materialize(flat string) error {
	deltas.Lock()
	defer deltas.Unlock()
	d, ok := deltas.m[flat]
	if !ok {
		return nil
	}
	if err := fillHoles(flat, d.parent); err != nil {
		return err
	}
	delete(deltas.m, flat)
	return nil
}

// foldDelta consolidates delta into frozen: a sparse delta's data extents are written
// into frozen and the delta removed; a whole delta replaces frozen (rename). Sparse
// deltas whose parent was delta now read through to frozen.
func foldDelta(delta, frozen string) error {
	deltas.Lock()
	defer deltas.Unlock()
	if _, sparse := deltas.m[delta]; sparse {
		if err := copyExtents(delta, frozen); err != nil {
			return err
		}
		if err := os.Remove(delta); err != nil {
			return err
		}
		delete(deltas.m, delta)
	} else if err := os.Rename(delta, frozen); err != nil {
		return err
	}
	for k, d := range deltas.m {
		if d.parent == delta {
			d.parent = frozen
			deltas.m[k] = d
		}
	}
	return nil
}

// forgetDeltas drops the sparse-delta records of a destroyed VM.
func forgetDeltas(vm types.ManagedObjectReference) {
	deltas.Lock()
	defer deltas.Unlock()
	for k, d := range deltas.m {
		if d.vm == vm {
			delete(deltas.m, k)
		}
	}
}

// copyExtents writes every data extent of src into dst at the same offsets.
func copyExtents(src, dst string) error {
	in, out, err := openPair(src, dst)
	if err != nil {
		return err
	}
	defer in.Close()
	defer out.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	extents, err := dataExtents(in, st.Size())
	if err != nil {
		return err
	}
	for _, e := range extents {
		if err := copyRange(out, in, e[0], e[1]-e[0]); err != nil {
			return err
		}
	}
	return out.Close()
}

// fillHoles copies into dst every part of src's data extents that is a hole in dst.
func fillHoles(dst, src string) error {
	in, out, err := openPair(src, dst)
	if err != nil {
		return err
	}
	defer in.Close()
	defer out.Close()
	st, err := out.Stat()
	if err != nil {
		return err
	}
	have, err := dataExtents(out, st.Size())
	if err != nil {
		return err
	}
	want, err := dataExtents(in, st.Size())
	if err != nil {
		return err
	}
	i := 0
	for _, w := range want {
		pos := w[0]
		for pos < w[1] {
			for i < len(have) && have[i][1] <= pos {
				i++
			}
			end := w[1]
			if i < len(have) && have[i][0] <= pos { // pos is in dst data: skip it
				pos = have[i][1]
				continue
			}
			if i < len(have) && have[i][0] < end {
				end = have[i][0]
			}
			if err := copyRange(out, in, pos, end-pos); err != nil {
				return err
			}
			pos = end
		}
	}
	return out.Close()
}

func openPair(src, dst string) (*os.File, *os.File, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, nil, err
	}
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		_ = in.Close()
		return nil, nil, err
	}
	return in, out, nil
}

// copyRange copies n bytes at off from in to out at the same offset (copy_file_range
// on Linux, through io.Copy between files).
func copyRange(out, in *os.File, off, n int64) error {
	if _, err := in.Seek(off, io.SeekStart); err != nil {
		return err
	}
	if _, err := out.Seek(off, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(out, &io.LimitedReader{R: in, N: n})
	return err
}
