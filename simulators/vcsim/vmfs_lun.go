package main

// The SAN data path of this simulator's hosts and the on-LUN layout of a VMFS volume
// (see vmfs.go for the datastores built on them).

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	vmfsMagic  = "DPVMFS1\n"
	vmfsHeadSz = 1 << 20
	vmfsAlign  = 64 << 10
)

type sanLUN struct {
	Lun      int    `json:"lun"`
	Size     int64  `json:"size"`
	ReadOnly bool   `json:"read_only"`
	ID       string `json:"id"`
}

type vmfsFile struct {
	Path    string     `json:"path"`
	Size    int64      `json:"size"`
	Extents [][3]int64 `json:"extents"`
}

type vmfsHeader struct {
	UUID   string     `json:"uuid"`
	Label  string     `json:"label"`
	Device string     `json:"device"`
	Files  []vmfsFile `json:"files"`
}

type packedFile struct {
	size, mtime int64
	file        vmfsFile
}

var san struct {
	url, host, user, password string
	client                    *http.Client
}

func configureSAN(url, host, user, password, caFile, tmp string) error {
	san.url, san.host, san.user, san.password = strings.TrimRight(url, "/"), host, user, password
	vmfs.tmp = tmp
	pool := x509.NewCertPool()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(pem)
	}
	san.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return nil
}

func sanDo(method, p string, body []byte) ([]byte, error) {
	if san.client == nil {
		return nil, fmt.Errorf("this host has no SAN (start with -san-url)")
	}
	req, err := http.NewRequest(method, san.url+p, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(san.user, san.password)
	resp, err := san.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("SAN %s %s: HTTP %d %s", method, p, resp.StatusCode, out)
	}
	return out, err
}

func sanLUNs() ([]sanLUN, error) {
	out, err := sanDo("GET", "/san/"+san.host, nil)
	if err != nil {
		return nil, err
	}
	var luns []sanLUN
	return luns, json.Unmarshal(out, &luns)
}

func sanRead(lun int, off, n int64) ([]byte, error) {
	return sanDo("GET", fmt.Sprintf("/san/%s/%d?offset=%d&length=%d", san.host, lun, off, n), nil)
}

func sanWrite(lun int, off int64, data []byte) error {
	_, err := sanDo("PUT", fmt.Sprintf("/san/%s/%d?offset=%d", san.host, lun, off), data)
	return err
}

func lunByID(id string) (*sanLUN, error) {
	luns, err := sanLUNs()
	if err != nil {
		return nil, err
	}
	for i := range luns {
		if luns[i].ID == id || "/vmfs/devices/disks/"+luns[i].ID+":1" == id {
			return &luns[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s to %s", errNoLUN, id, san.host)
}

// errNoLUN: the device is no longer presented (permanent device loss for the host).
var errNoLUN = errors.New("no such LUN is presented")

func readHeader(lun int) (*vmfsHeader, error) {
	head, err := sanRead(lun, 0, vmfsHeadSz)
	if err != nil {
		return nil, err
	}
	if len(head) < 16 || string(head[:8]) != vmfsMagic {
		return nil, nil // no file system
	}
	n := binary.LittleEndian.Uint64(head[8:16])
	if n > vmfsHeadSz-16 {
		return nil, fmt.Errorf("LUN %d: VMFS header length %d out of range", lun, n)
	}
	var h vmfsHeader
	return &h, json.Unmarshal(head[16:16+n], &h)
}

func writeHeader(lun int, h *vmfsHeader) error {
	js, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if len(js) > vmfsHeadSz-16 {
		return fmt.Errorf("VMFS header too large (%d bytes)", len(js))
	}
	buf := make([]byte, 16+len(js))
	copy(buf, vmfsMagic)
	binary.LittleEndian.PutUint64(buf[8:16], uint64(len(js)))
	copy(buf[16:], js)
	return sanWrite(lun, 0, buf)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s", h[:8], h[8:16], h[16:20], h[20:32])
}

// pack writes the files of dir that changed since the last write back (data extents
// only, appended after what is on the LUN; everything again from 1 MiB when the LUN is
// full), then the header naming every file's extents.
func pack(lun *sanLUN, m *vmfsMount) error {
	var paths []string
	err := filepath.Walk(m.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for attempt := 0; attempt < 2; attempt++ {
		if m.packed == nil || attempt == 1 {
			m.packed, m.next = map[string]packedFile{}, vmfsHeadSz
		}
		h := &vmfsHeader{UUID: m.uuid, Label: m.label, Device: m.device}
		packed := map[string]packedFile{}
		full := false
		for _, p := range paths {
			rel, _ := filepath.Rel(m.dir, p)
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			old, ok := m.packed[rel]
			if !ok || old.size != st.Size() || old.mtime != st.ModTime().UnixNano() {
				vf, err := packFile(lun, p, rel, st.Size(), &m.next)
				if errors.Is(err, errLUNFull) {
					full = true
					break
				}
				if err != nil {
					return err
				}
				old = packedFile{size: st.Size(), mtime: st.ModTime().UnixNano(), file: vf}
			}
			packed[rel] = old
			h.Files = append(h.Files, old.file)
		}
		if full {
			continue
		}
		m.packed = packed
		return writeHeader(lun.Lun, h)
	}
	return fmt.Errorf("datastore %s does not fit its LUN (%d bytes)", m.label, lun.Size)
}

var errLUNFull = errors.New("the LUN is full")

// packFile writes one file's data extents from *next on.
func packFile(lun *sanLUN, p, rel string, size int64, next *int64) (vmfsFile, error) {
	vf := vmfsFile{Path: rel, Size: size}
	f, ext, err := openExtents(p, size)
	if err != nil {
		return vf, err
	}
	defer f.Close()
	for _, e := range ext {
		for off := e[0]; off < e[1]; off += 4 << 20 {
			n := e[1] - off
			if n > 4<<20 {
				n = 4 << 20
			}
			if *next+n > lun.Size {
				return vf, errLUNFull
			}
			buf := make([]byte, n)
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				return vf, err
			}
			if err := sanWrite(lun.Lun, *next, buf); err != nil {
				return vf, err
			}
			vf.Extents = append(vf.Extents, [3]int64{off, n, *next})
			*next += (n + vmfsAlign - 1) / vmfsAlign * vmfsAlign
		}
	}
	return vf, nil
}

// unpack copies a volume's files from the LUN into dir (sparse).
func unpack(lun int, h *vmfsHeader, dir string) error {
	for _, vf := range h.Files {
		p := filepath.Join(dir, filepath.FromSlash(vf.Path))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("VMFS file path %q escapes the volume", vf.Path)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0700); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0600)
		if err != nil {
			return err
		}
		for _, e := range vf.Extents {
			data, err := sanRead(lun, e[2], e[1])
			if err == nil {
				_, err = f.WriteAt(data, e[0])
			}
			if err != nil {
				f.Close()
				return err
			}
		}
		err = f.Truncate(vf.Size)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// syncDatastore writes the VMs' .vmx files and the datastore back to its LUN.
