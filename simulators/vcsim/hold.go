package main

// Slow tasks. vcsim runs a task's work inside the SOAP call that starts it, so every
// task has ended before the client sees its moref. A fault rule of kind "hold" on a
// method ({"method": "CreateSnapshot_Task", "kind": "hold", "ms": 5000}) keeps the
// task's reported state "running" for ms after its work is done, then publishes the
// real end state (result or fault): what a client waiting on a slow vCenter task sees.

import (
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

var holds = struct {
	sync.Mutex
	armed map[types.ManagedObjectReference]time.Duration // _this -> hold of its next task
	tasks map[types.ManagedObjectReference]time.Duration // task -> hold
}{
	armed: map[types.ManagedObjectReference]time.Duration{},
	tasks: map[types.ManagedObjectReference]time.Duration{},
}

func armHold(this types.ManagedObjectReference, ms int) {
	holds.Lock()
	holds.armed[this] = time.Duration(ms) * time.Millisecond
	holds.Unlock()
}

func disarmHold(this types.ManagedObjectReference) {
	holds.Lock()
	delete(holds.armed, this)
	holds.Unlock()
}

// holdTask marks a task created for entity if a hold was armed for it.
func holdTask(entity, task types.ManagedObjectReference) {
	holds.Lock()
	defer holds.Unlock()
	if d, ok := holds.armed[entity]; ok {
		delete(holds.armed, entity)
		holds.tasks[task] = d
	}
}

// heldEnd is called on every task update; when a held task reaches its end state, the
// state is set back to running and the end is published after the hold.
func heldEnd(t *mo.Task) {
	if t.Info.State != types.TaskInfoStateSuccess && t.Info.State != types.TaskInfoStateError {
		return
	}
	holds.Lock()
	d, ok := holds.tasks[t.Self]
	delete(holds.tasks, t.Self)
	holds.Unlock()
	if !ok {
		return
	}
	end := []types.PropertyChange{
		{Name: "info.completeTime", Val: time.Now()},
		{Name: "info.state", Val: t.Info.State},
	}
	if t.Info.Result != nil {
		end = append(end, types.PropertyChange{Name: "info.result", Val: t.Info.Result})
	}
	if t.Info.Error != nil {
		end = append(end, types.PropertyChange{Name: "info.error", Val: *t.Info.Error})
	}
	t.Info.State = types.TaskInfoStateRunning
	t.Info.Result = nil
	t.Info.Error = nil
	t.Info.CompleteTime = nil
	ref := t.Self
	go func() {
		time.Sleep(d)
		if obj := simulator.Map.Get(ref); obj != nil {
			simulator.Map.WithLock(obj, func() { simulator.Map.Update(obj, end) })
		}
	}()
}
