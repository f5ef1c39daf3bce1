package main

// Guest operations without a guest: stock vcsim 0.24.2 runs them only for VMs backed
// by Docker containers. Here the GuestFileManager singleton is replaced (Map.Put under
// the same moref, like the property collector fix) by one that works on the VM's disk
// image: the first ext2/3/4 file system of the VM's first disk (whole disk, or an MBR
// or GPT partition), in the current -flat file (the delta after a snapshot), edited
// with e2fsprogs' debugfs ("image?offset=N" selects the partition). A later backup
// therefore sees what was uploaded, as it would with a real guest.
//
// Methods, checked as vCenter does (in this order): an injected "task" kind fault
// rule for the method (/_fault), the VM (ManagedObjectNotFound), its power state
// (InvalidPowerState unless poweredOn), the guest login (NamePasswordAuthentication
// against -guest-user/-guest-password, else InvalidGuestLogin):
//   - MakeDirectoryInGuest: FileAlreadyExists if the path exists, FileNotFound for a
//     missing parent without createParentDirectories, NotADirectory for a file in the way;
//   - InitiateFileTransferToGuest: parent must be a directory (FileNotFound), existing
//     file without overwrite: FileAlreadyExists, a directory: NotAFile. Answers
//     "https://*/guestFile?id=TICKET" like ESXi ('*' = the host the client called); the
//     PUT of fileSize bytes to it (front handler, same TLS listener) writes the file and
//     applies GuestPosixFileAttributes (permissions, owner, group, modification time);
//   - InitiateFileTransferFromGuest: GET of the returned URL serves the file;
//   - ListFilesInGuest (index, maxResults, matchPattern as a shell pattern);
//   - DeleteFileInGuest (files and symlinks; NotAFile for a directory).
// A VM whose first disk has no ext file system answers GuestOperationsUnavailable.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const guestFilePath = "/guestFile"

var guestCfg = struct {
	user, password, scheme string
}{user: "root", password: "dpflow-guest", scheme: "https"}

type guestTicket struct {
	vm        types.ManagedObjectReference
	path      string
	upload    bool
	size      int64
	overwrite bool
	attrs     types.BaseGuestFileAttributes
}

var tickets = struct {
	sync.Mutex
	m map[string]*guestTicket
}{m: map[string]*guestTicket{}}

// guestFileManager replaces vcsim's GuestFileManager (embedded by value: the
// simulator may make copies of registered types with reflect.New).
type guestFileManager struct {
	simulator.GuestFileManager
}

func installGuestFileManager() {
	ref := types.ManagedObjectReference{Type: "GuestFileManager", Value: "guestOperationsFileManager"}
	if simulator.Map.Get(ref) == nil {
		// the VPX model always has one; make sure anyway
		simulator.Map.Put(&simulator.GuestFileManager{})
	}
	m := &guestFileManager{}
	m.Self = ref
	simulator.Map.Put(m)
}

// --- checks -------------------------------------------------------------------------

// prepare checks a guest operation as vCenter does and returns the VM.
func (m *guestFileManager) prepare(vmRef types.ManagedObjectReference, auth types.BaseGuestAuthentication) (*simulator.VirtualMachine, *soap.Fault) {
	if f := faults.takeArmed(m.Self); f != nil { // a "task" kind rule for this method
		msg := ""
		for _, fm := range f.GetMethodFault().FaultMessage {
			msg = fm.Message
		}
		return nil, simulator.Fault(msg, f)
	}
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return nil, simulator.Fault("The object has already been deleted or has not been completely created", &types.ManagedObjectNotFound{Obj: vmRef})
	}
	var state types.VirtualMachinePowerState
	simulator.Map.WithLock(vm, func() { state = vm.Runtime.PowerState })
	if state != types.VirtualMachinePowerStatePoweredOn {
		return nil, simulator.Fault(fmt.Sprintf("The attempted operation cannot be performed in the current state (%s).", state),
			&types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOn, ExistingState: state})
	}
	np, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || np.Username != guestCfg.user || np.Password != guestCfg.password {
		return nil, simulator.Fault("Failed to authenticate with the guest operating system using the supplied credentials.", &types.InvalidGuestLogin{})
	}
	return vm, nil
}

// guestPath checks and cleans an absolute guest path (debugfs takes it in double
// quotes, so a path holding one, or a control character, is refused).
func guestPath(p, prop string) (string, *soap.Fault) {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\"\x00\n\r") {
		return "", simulator.Fault("A specified parameter was not correct: "+prop, &types.InvalidArgument{InvalidProperty: prop})
	}
	return path.Clean(p), nil
}

func fileFaultOf(f types.BaseMethodFault, msg string) *soap.Fault { return simulator.Fault(msg, f) }

func alreadyExists(p string) *soap.Fault {
	return fileFaultOf(&types.FileAlreadyExists{FileFault: types.FileFault{File: p}},
		fmt.Sprintf("Cannot complete the operation because the file or folder %s already exists", p))
}

func notFound(p string) *soap.Fault {
	return fileFaultOf(&types.FileNotFound{FileFault: types.FileFault{File: p}}, fmt.Sprintf("File %s was not found", p))
}

func systemError(err error) *soap.Fault {
	return simulator.Fault(err.Error(), &types.SystemError{Reason: err.Error()})
}

// --- the guest file system ----------------------------------------------------------

// extFS is an ext2/3/4 file system at offset in a -flat disk file.
type extFS struct {
	flat   string
	offset int64
}

func (e *extFS) spec() string {
	if e.offset == 0 {
		return e.flat
	}
	return fmt.Sprintf("%s?offset=%d", e.flat, e.offset)
}

// run runs one debugfs request; debugfs exits 0 even when the request failed, so its
// messages (stderr, less the version banner) are returned for the caller to judge.
func (e *extFS) run(write bool, request string) (string, string, error) {
	args := []string{"-R", request, e.spec()}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.Command("debugfs", args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("debugfs %s: %v: %s", request, err, stderr.String())
	}
	var msgs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			msgs = append(msgs, l)
		}
	}
	return stdout.String(), strings.Join(msgs, "; "), nil
}

// must runs write requests in one debugfs session; any message is an error.
func (e *extFS) must(requests ...string) error {
	cmd := exec.Command("debugfs", "-w", "-f", "-", e.spec())
	cmd.Stdin = strings.NewReader(strings.Join(requests, "\n") + "\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs %s: %v: %s", strings.Join(requests, "; "), err, stderr.String())
	}
	var msgs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") && !strings.HasPrefix(l, "Allocated inode") {
			msgs = append(msgs, l)
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("debugfs %s: %s", strings.Join(requests, "; "), strings.Join(msgs, "; "))
	}
	return nil
}

type extStat struct {
	exists           bool
	kind             string // file, directory, symlink, other
	mode, uid, gid   int64
	size, mtime      int64
	atime            int64
	notDirOnTheRoute bool
}

func (e *extFS) stat(p string) (extStat, error) {
	out, msg, err := e.run(false, fmt.Sprintf("stat \"%s\"", p))
	if err != nil {
		return extStat{}, err
	}
	if strings.Contains(msg, "not found") {
		return extStat{}, nil
	}
	if strings.Contains(msg, "not a directory") || strings.Contains(msg, "Ext2 inode is not a directory") {
		return extStat{notDirOnTheRoute: true}, nil
	}
	if !strings.Contains(out, "Inode:") {
		return extStat{}, fmt.Errorf("debugfs stat %s: %s", p, msg)
	}
	s := extStat{exists: true, kind: "other"}
	fields := strings.Fields(out)
	seen := map[string]bool{}
	for i := 0; i+1 < len(fields); i++ {
		v := fields[i+1]
		if seen[fields[i]] { // the first of each (the Fragment line has a Size: too)
			continue
		}
		seen[fields[i]] = true
		switch fields[i] {
		case "Type:":
			switch v {
			case "regular":
				s.kind = "file"
			case "directory":
				s.kind = "directory"
			case "symlink":
				s.kind = "symlink"
			}
		case "Mode:":
			s.mode, _ = strconv.ParseInt(v, 8, 64)
		case "User:":
			s.uid, _ = strconv.ParseInt(v, 10, 64)
		case "Group:":
			s.gid, _ = strconv.ParseInt(v, 10, 64)
		case "Size:":
			s.size, _ = strconv.ParseInt(v, 10, 64)
		case "mtime:", "atime:":
			hexSecs := strings.SplitN(strings.TrimPrefix(v, "0x"), ":", 2)[0]
			n, _ := strconv.ParseInt(hexSecs, 16, 64)
			if fields[i] == "mtime:" {
				s.mtime = n
			} else {
				s.atime = n
			}
		}
	}
	return s, nil
}

// findExtFS locates the first ext file system of a disk image: the whole disk, else
// the MBR primary partitions, else the GPT partitions (512-byte sectors).
func findExtFS(flat string) (*extFS, error) {
	f, err := os.Open(flat)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	isExt := func(off int64) bool {
		var magic [2]byte
		_, err := f.ReadAt(magic[:], off+1024+56)
		return err == nil && binary.LittleEndian.Uint16(magic[:]) == 0xEF53
	}
	if isExt(0) {
		return &extFS{flat: flat}, nil
	}
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil || mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, fmt.Errorf("no ext file system and no partition table on %s", flat)
	}
	var starts []int64
	gpt := false
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		switch e[4] {
		case 0:
		case 0xEE:
			gpt = true
		default:
			starts = append(starts, int64(binary.LittleEndian.Uint32(e[8:]))*512)
		}
	}
	if gpt {
		starts = nil
		hdr := make([]byte, 92)
		if _, err := f.ReadAt(hdr, 512); err != nil || string(hdr[:8]) != "EFI PART" {
			return nil, fmt.Errorf("damaged GPT header on %s", flat)
		}
		lba := int64(binary.LittleEndian.Uint64(hdr[72:]))
		n := int64(binary.LittleEndian.Uint32(hdr[80:]))
		size := int64(binary.LittleEndian.Uint32(hdr[84:]))
		if n > 1024 || size < 128 || size > 4096 {
			return nil, fmt.Errorf("implausible GPT on %s", flat)
		}
		table := make([]byte, n*size)
		if _, err := f.ReadAt(table, lba*512); err != nil {
			return nil, fmt.Errorf("GPT entries of %s: %v", flat, err)
		}
		for i := int64(0); i < n; i++ {
			e := table[i*size:]
			used := false
			for _, b := range e[:16] {
				used = used || b != 0
			}
			if used {
				starts = append(starts, int64(binary.LittleEndian.Uint64(e[32:]))*512)
			}
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, s := range starts {
		if isExt(s) {
			return &extFS{flat: flat, offset: s}, nil
		}
	}
	return nil, fmt.Errorf("no ext2/3/4 file system on %s", flat)
}

// withGuestFS runs fn on the guest file system of vm's first disk, the VM locked (no
// snapshot can freeze or swap the disk meanwhile).
func withGuestFS(vm *simulator.VirtualMachine, fn func(fs *extFS) *soap.Fault) *soap.Fault {
	var fault *soap.Fault
	simulator.Map.WithLock(vm, func() {
		var flat string
		for _, d := range vm.Config.Hardware.Device {
			if disk, b := flatBacking(d); disk != nil {
				local, err := localPath(b.FileName)
				if err != nil {
					fault = systemError(err)
					return
				}
				flat = flatName(local)
				if err := materialize(flat); err != nil { // debugfs needs the whole disk
					fault = systemError(err)
					return
				}
				break
			}
		}
		if flat == "" {
			fault = simulator.Fault("The guest operations agent could not be contacted (the VM has no disk).", &types.GuestOperationsUnavailable{})
			return
		}
		fs, err := findExtFS(flat)
		if err != nil {
			fault = simulator.Fault("The guest operations agent could not be contacted: dpflow-vcsim: "+err.Error(), &types.GuestOperationsUnavailable{})
			return
		}
		fault = fn(fs)
	})
	return fault
}

// parentDir checks that the parent of p is a directory.
func parentDir(fs *extFS, p string) *soap.Fault {
	parent := path.Dir(p)
	st, err := fs.stat(parent)
	switch {
	case err != nil:
		return systemError(err)
	case !st.exists:
		return notFound(parent)
	case st.kind != "directory":
		return fileFaultOf(&types.NotADirectory{FileFault: types.FileFault{File: parent}}, parent+" is not a directory")
	}
	return nil
}

// --- methods ------------------------------------------------------------------------

func (m *guestFileManager) MakeDirectoryInGuest(ctx *simulator.Context, req *types.MakeDirectoryInGuest) soap.HasFault {
	body := new(methods.MakeDirectoryInGuestBody)
	vm, fault := m.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	p, fault := guestPath(req.DirectoryPath, "directoryPath")
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Fault_ = withGuestFS(vm, func(fs *extFS) *soap.Fault {
		st, err := fs.stat(p)
		if err != nil {
			return systemError(err)
		}
		if st.exists {
			return alreadyExists(p)
		}
		if !req.CreateParentDirectories {
			if f := parentDir(fs, p); f != nil {
				return f
			}
			if err := fs.must(fmt.Sprintf("mkdir \"%s\"", p)); err != nil {
				return systemError(err)
			}
			return nil
		}
		at := ""
		for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			at += "/" + name
			st, err := fs.stat(at)
			if err != nil {
				return systemError(err)
			}
			if st.exists && st.kind != "directory" {
				return fileFaultOf(&types.NotADirectory{FileFault: types.FileFault{File: at}}, at+" is not a directory")
			}
			if !st.exists {
				if err := fs.must(fmt.Sprintf("mkdir \"%s\"", at)); err != nil {
					return systemError(err)
				}
			}
		}
		return nil
	})
	if body.Fault_ == nil {
		body.Res = &types.MakeDirectoryInGuestResponse{}
	}
	return body
}

func newTicket(t *guestTicket) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	tickets.Lock()
	tickets.m[id] = t
	tickets.Unlock()
	return (&url.URL{Scheme: guestCfg.scheme, Host: "*", Path: guestFilePath,
		RawQuery: url.Values{"id": []string{id}}.Encode()}).String()
}

func (m *guestFileManager) InitiateFileTransferToGuest(ctx *simulator.Context, req *types.InitiateFileTransferToGuest) soap.HasFault {
	body := new(methods.InitiateFileTransferToGuestBody)
	vm, fault := m.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	p, fault := guestPath(req.GuestFilePath, "guestFilePath")
	if fault == nil && req.FileSize < 0 {
		fault = simulator.Fault("A specified parameter was not correct: fileSize", &types.InvalidArgument{InvalidProperty: "fileSize"})
	}
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Fault_ = withGuestFS(vm, func(fs *extFS) *soap.Fault {
		if f := parentDir(fs, p); f != nil {
			return f
		}
		return checkTarget(fs, p, req.Overwrite)
	})
	if body.Fault_ == nil {
		body.Res = &types.InitiateFileTransferToGuestResponse{Returnval: newTicket(&guestTicket{
			vm: vm.Self, path: p, upload: true, size: req.FileSize, overwrite: req.Overwrite, attrs: req.FileAttributes,
		})}
	}
	return body
}

// checkTarget: may a file be written at p?
func checkTarget(fs *extFS, p string, overwrite bool) *soap.Fault {
	st, err := fs.stat(p)
	switch {
	case err != nil:
		return systemError(err)
	case st.exists && st.kind == "directory":
		return fileFaultOf(&types.NotAFile{FileFault: types.FileFault{File: p}}, p+" is not a file")
	case st.exists && !overwrite:
		return alreadyExists(p)
	}
	return nil
}

func posixAttrs(st extStat) *types.GuestPosixFileAttributes {
	uid, gid := int32(st.uid), int32(st.gid)
	mtime, atime := time.Unix(st.mtime, 0).UTC(), time.Unix(st.atime, 0).UTC()
	return &types.GuestPosixFileAttributes{
		GuestFileAttributes: types.GuestFileAttributes{ModificationTime: &mtime, AccessTime: &atime},
		OwnerId:             &uid, GroupId: &gid, Permissions: st.mode & 07777,
	}
}

func (m *guestFileManager) InitiateFileTransferFromGuest(ctx *simulator.Context, req *types.InitiateFileTransferFromGuest) soap.HasFault {
	body := new(methods.InitiateFileTransferFromGuestBody)
	vm, fault := m.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	p, fault := guestPath(req.GuestFilePath, "guestFilePath")
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	var st extStat
	body.Fault_ = withGuestFS(vm, func(fs *extFS) *soap.Fault {
		var err error
		if st, err = fs.stat(p); err != nil {
			return systemError(err)
		}
		if !st.exists || st.notDirOnTheRoute {
			return notFound(p)
		}
		if st.kind != "file" {
			return fileFaultOf(&types.NotAFile{FileFault: types.FileFault{File: p}}, p+" is not a file")
		}
		return nil
	})
	if body.Fault_ == nil {
		body.Res = &types.InitiateFileTransferFromGuestResponse{Returnval: types.FileTransferInformation{
			Attributes: posixAttrs(st), Size: st.size,
			Url: newTicket(&guestTicket{vm: vm.Self, path: p}),
		}}
	}
	return body
}

func (m *guestFileManager) DeleteFileInGuest(ctx *simulator.Context, req *types.DeleteFileInGuest) soap.HasFault {
	body := new(methods.DeleteFileInGuestBody)
	vm, fault := m.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	p, fault := guestPath(req.FilePath, "filePath")
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Fault_ = withGuestFS(vm, func(fs *extFS) *soap.Fault {
		st, err := fs.stat(p)
		switch {
		case err != nil:
			return systemError(err)
		case !st.exists:
			return notFound(p)
		case st.kind == "directory":
			return fileFaultOf(&types.NotAFile{FileFault: types.FileFault{File: p}}, p+" is not a file")
		}
		if err := fs.must(fmt.Sprintf("rm \"%s\"", p)); err != nil {
			return systemError(err)
		}
		return nil
	})
	if body.Fault_ == nil {
		body.Res = &types.DeleteFileInGuestResponse{}
	}
	return body
}

func (m *guestFileManager) ListFilesInGuest(ctx *simulator.Context, req *types.ListFilesInGuest) soap.HasFault {
	body := new(methods.ListFilesInGuestBody)
	vm, fault := m.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	p, fault := guestPath(req.FilePath, "filePath")
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	var files []types.GuestFileInfo
	body.Fault_ = withGuestFS(vm, func(fs *extFS) *soap.Fault {
		st, err := fs.stat(p)
		switch {
		case err != nil:
			return systemError(err)
		case !st.exists:
			return notFound(p)
		case st.kind != "directory":
			files = append(files, types.GuestFileInfo{Path: path.Base(p), Type: st.kind, Size: st.size, Attributes: posixAttrs(st)})
			return nil
		}
		out, msg, err := fs.run(false, fmt.Sprintf("ls -p \"%s\"", p))
		if err != nil || (out == "" && msg != "") {
			return systemError(fmt.Errorf("listing %s: %v %s", p, err, msg))
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			// /inode/mode/uid/gid/name/size/ (no size for directories)
			f := strings.Split(sc.Text(), "/")
			if len(f) < 7 || f[1] == "0" {
				continue
			}
			name := strings.Join(f[5:len(f)-2], "/")
			if req.MatchPattern != "" {
				if ok, _ := path.Match(req.MatchPattern, name); !ok {
					continue
				}
			}
			est, err := fs.stat(path.Join(p, name))
			if err != nil || !est.exists {
				continue
			}
			files = append(files, types.GuestFileInfo{Path: name, Type: est.kind, Size: est.size, Attributes: posixAttrs(est)})
		}
		return nil
	})
	if body.Fault_ != nil {
		return body
	}
	start := int(req.Index)
	if start > len(files) {
		start = len(files)
	}
	files = files[start:]
	remaining := 0
	if req.MaxResults > 0 && len(files) > int(req.MaxResults) {
		remaining = len(files) - int(req.MaxResults)
		files = files[:req.MaxResults]
	}
	body.Res = &types.ListFilesInGuestResponse{Returnval: types.GuestListFileInfo{Files: files, Remaining: int32(remaining)}}
	return body
}

// --- the transfer URL (front handler) -----------------------------------------------

// serveGuestFile answers PUT (upload) and GET (download) of a ticket's URL; each
// ticket serves one transfer.
func serveGuestFile(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	tickets.Lock()
	t := tickets.m[id]
	if t != nil && ((r.Method == http.MethodPut) == t.upload) && (r.Method == http.MethodPut || r.Method == http.MethodGet) {
		delete(tickets.m, id)
	} else {
		t = nil
	}
	tickets.Unlock()
	if t == nil {
		http.Error(w, "unknown or used guest file transfer ticket", http.StatusNotFound)
		return
	}
	vm, ok := simulator.Map.Get(t.vm).(*simulator.VirtualMachine)
	if !ok {
		http.Error(w, "the VM is gone", http.StatusNotFound)
		return
	}
	if t.upload {
		guestUpload(w, r, vm, t)
		return
	}
	tmp, err := os.CreateTemp("", "dpflow-guest-get-")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	var msg string
	fault := withGuestFS(vm, func(fs *extFS) *soap.Fault {
		_ = os.Remove(tmp.Name())
		_, msg, err = fs.run(false, fmt.Sprintf("dump \"%s\" \"%s\"", t.path, tmp.Name()))
		return nil
	})
	if fault != nil || err != nil || msg != "" {
		http.Error(w, fmt.Sprintf("reading %s from the guest: %v %s", t.path, err, msg), http.StatusInternalServerError)
		return
	}
	http.ServeFile(w, r, tmp.Name())
}

func guestUpload(w http.ResponseWriter, r *http.Request, vm *simulator.VirtualMachine, t *guestTicket) {
	tmp, err := os.CreateTemp("", "dpflow-guest-put-")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(r.Body, t.size+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		http.Error(w, "reading the upload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if n != t.size {
		http.Error(w, fmt.Sprintf("the upload has %d bytes, InitiateFileTransferToGuest said %d", n, t.size), http.StatusBadRequest)
		return
	}
	status, text := http.StatusOK, ""
	fault := withGuestFS(vm, func(fs *extFS) *soap.Fault {
		if f := parentDir(fs, t.path); f != nil {
			status, text = http.StatusNotFound, "the parent directory of "+t.path+" is gone"
			return nil
		}
		st, err := fs.stat(t.path)
		switch {
		case err != nil:
			status, text = http.StatusInternalServerError, err.Error()
			return nil
		case st.exists && (st.kind == "directory" || !t.overwrite):
			status, text = http.StatusConflict, t.path+" exists"
			return nil
		case st.exists:
			if err := fs.must(fmt.Sprintf("rm \"%s\"", t.path)); err != nil {
				status, text = http.StatusInternalServerError, err.Error()
				return nil
			}
		}
		write := fmt.Sprintf("write \"%s\" \"%s\"", tmp.Name(), t.path)
		if err := fs.must(append([]string{write}, attrRequests(t.path, t.attrs)...)...); err != nil {
			status, text = http.StatusInternalServerError, err.Error()
		}
		return nil
	})
	if fault != nil {
		status, text = http.StatusServiceUnavailable, fault.String
	}
	if status != http.StatusOK {
		http.Error(w, text, status)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// attrRequests set what the client asked for (else root-owned, 0644, now), like a
// file created by VMware Tools.
func attrRequests(p string, attrs types.BaseGuestFileAttributes) []string {
	perm, uid, gid := int64(0644), int64(0), int64(0)
	var mtime, atime *time.Time
	if attrs != nil {
		base := attrs.GetGuestFileAttributes()
		mtime, atime = base.ModificationTime, base.AccessTime
		if pa, ok := attrs.(*types.GuestPosixFileAttributes); ok {
			if pa.Permissions != 0 {
				perm = pa.Permissions & 07777
			}
			if pa.OwnerId != nil {
				uid = int64(*pa.OwnerId)
			}
			if pa.GroupId != nil {
				gid = int64(*pa.GroupId)
			}
		}
	}
	sets := []string{
		fmt.Sprintf("mode 0%o", 0100000|perm),
		fmt.Sprintf("uid %d", uid),
		fmt.Sprintf("gid %d", gid),
	}
	if mtime != nil {
		sets = append(sets, fmt.Sprintf("mtime @%d", mtime.Unix()))
	}
	if atime != nil {
		sets = append(sets, fmt.Sprintf("atime @%d", atime.Unix()))
	}
	for i, s := range sets {
		sets[i] = fmt.Sprintf("set_inode_field \"%s\" %s", p, s)
	}
	return sets
}
