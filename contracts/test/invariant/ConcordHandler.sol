// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Vm} from "forge-std/Vm.sol";
import {Concord} from "../../Concord.sol";
import {DevToken} from "../../DevToken.sol";
import {IConcordEvents} from "../../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../../interfaces/IConcordTypes.sol";

/// @notice Drives Concord through random but well-formed protocol traffic (and some
///         ill-formed calls, which must revert without effect) and keeps ghost records the
///         invariants check: deposits/withdrawals, payments per submission, unbonds that
///         happened while work was pending, and the rounds' monotonicity.
contract ConcordHandler is CommonBase, StdCheats, StdUtils {
    Concord internal immutable concord;
    DevToken internal immutable token;

    address[] public trainers;
    address[] public validators;
    address public initiator;
    uint256[] public tasks;

    uint256 public ghostDeposited;
    uint256 public ghostWithdrawn;
    /// Set when a (task, round, index) was paid or slashed twice.
    bool public doubleSettled;
    /// Set when a node with unfinalized work completed an unbond.
    bool public unbondedWithPendingWork;
    /// Set when a task's head, finalized count or a final model digest went backwards.
    bool public roundsWentBack;
    /// Set when a round paid trainers more than its reward, or validators more than its fee.
    bool public overpaid;
    /// Set when finalize succeeded on a round that never opened or was already settled.
    bool public phantomSettled;
    /// Set when a claim above the task's maxWorkUnits was accepted.
    bool public overclaimAccepted;
    /// Set when a round's check seed changed after it was fixed, was fixed by a block at or
    /// before the last submission, or a commit landed in a round with submissions and no seed.
    bool public seedBroken;

    /// Per-task ledger from the events alone: escrowed in (create, top-ups), slashes kept by the
    /// task (trainer slash - bounty, validator slashes), paid out (rewards, fees, reclaims).
    mapping(uint256 => uint256) public ghostTaskIn;
    mapping(uint256 => uint256) public ghostTaskOut;
    /// Per-node stake from the calls and events: registered + added - slashed - unbonded.
    mapping(address => uint256) public ghostStake;
    /// Per-account credited balance: credits from events - withdrawals.
    mapping(address => uint256) public ghostCredited;

    mapping(bytes32 => uint256) internal settledCount;
    mapping(uint256 => uint256) internal lastHead;
    mapping(uint256 => uint256) internal lastFinalized;
    mapping(uint256 => mapping(uint256 => bytes32)) internal seenModel;
    mapping(uint256 => mapping(uint256 => uint256)) internal rewardPaid;
    mapping(uint256 => mapping(uint256 => uint256)) internal feePaid;
    /// What each validator committed per (task, round): rejectSeed + 1 and the model flag.
    mapping(address => mapping(bytes32 => uint256)) internal committedSeed;
    mapping(address => mapping(bytes32 => bool)) internal committedAlt;

    uint256 public calls;
    /// Successful actions, to show the traffic reaches every step (printed after each run).
    uint256 public nSubmits;
    uint256 public nCommits;
    uint256 public nReveals;
    uint256 public nRoundsSettled;
    uint256 public nRejected;
    uint256 public nRewarded;
    uint256 public nUnbonds;
    uint256 public nVoid;
    uint256 public nEmpty;
    uint256 public nTies;
    uint256 public nClosed;
    uint256 public nReclaimed;
    uint256 public nPhantomTries;
    uint256 public nRemoved;
    uint256 public nDry;
    uint256 public nSeedsFixed;
    uint256 public nSeedAnchors;
    uint256 public nSeedReanchors;
    uint256 public nSeedTries;
    /// Fixed check seed per (task, round) and the last block with a submission per (task, round).
    mapping(uint256 => mapping(uint256 => bytes32)) internal seedOf;
    mapping(uint256 => mapping(uint256 => uint256)) internal lastSubmitBlock;

    constructor(Concord concord_, DevToken token_) {
        concord = concord_;
        token = token_;
        initiator = makeAddr("h-initiator");
        _fund(initiator);
        for (uint256 i; i < 4; ++i) {
            address t = makeAddr(string.concat("h-trainer", vm.toString(i)));
            _fund(t);
            vm.prank(t);
            concord.register(IConcordTypes.Role.Trainer, 300e18);
            ghostDeposited += 300e18;
            ghostStake[t] = 300e18;
            trainers.push(t);
        }
        for (uint256 i; i < 4; ++i) {
            address v = makeAddr(string.concat("h-validator", vm.toString(i)));
            _fund(v);
            vm.prank(v);
            concord.register(IConcordTypes.Role.Validator, 300e18);
            ghostDeposited += 300e18;
            ghostStake[v] = 300e18;
            validators.push(v);
        }
        // An open-ended task, a fixed-length one (3 rounds, budget for exactly those) and a
        // budget-limited one that runs dry after 2 rounds unless topped up.
        _newTask(0, 0);
        _newTask(1, 1);
        _newTask(0, 2);
        // Everyone starts joined to every task, so short runs reach settlement.
        for (uint256 i; i < 8; ++i) {
            address who = _actor(i);
            for (uint256 t; t < 3; ++t) {
                vm.prank(who);
                concord.join(tasks[t]);
            }
        }
    }

    // --- actions ----------------------------------------------------------------------------

    function createTask(uint8 asyncLevel, uint8 kind) external {
        if (tasks.length >= 4) return;
        vm.recordLogs();
        _newTask(uint8(_bound(asyncLevel, 0, 2)), kind % 3);
        _after();
    }

    function topUp(uint256 taskSeed, uint96 amount) external {
        uint256 id = _task(taskSeed);
        amount = uint96(_bound(amount, 1, 500e18));
        vm.recordLogs();
        vm.prank(initiator);
        try concord.topUp(id, amount) {
            ghostDeposited += amount;
            ghostTaskIn[id] += amount;
        } catch {
            if (!concord.taskState(id).closed) revert("top-up of an open task refused");
        }
        _after();
    }

    /// The initiator closes a task (rarely); a stranger's close must revert.
    function closeTask(uint256 taskSeed, bool byStranger) external {
        if (taskSeed % 5 != 0) return;
        uint256 id = _task(taskSeed / 5);
        vm.recordLogs();
        vm.prank(byStranger ? trainers[0] : initiator);
        try concord.closeTask(id) {
            if (byStranger) phantomSettled = true;
            ++nClosed;
        } catch {}
        _after();
    }

    /// reclaimBudget at any time: succeeds only once the task is over, for its initiator.
    function reclaim(uint256 taskSeed) external {
        uint256 id = _task(taskSeed);
        IConcordTypes.TaskState memory st = concord.taskState(id);
        IConcordTypes.TaskParams memory p = concord.taskParams(id);
        bool over = (p.maxRounds != 0 && st.finalizedRounds >= p.maxRounds)
            || (st.closed && st.finalizedRounds > st.headRound);
        vm.recordLogs();
        vm.prank(initiator);
        try concord.reclaimBudget(id) {
            if (!over) phantomSettled = true;
            ++nReclaimed;
        } catch {}
        _after();
    }

    /// finalize on any round number of any task: past (settled), current, or never opened.
    /// Only the oldest opened, unsettled round past its reveal phase may settle.
    function finalizeAny(uint256 taskSeed, uint32 roundSeed, uint8 maxItems) external {
        uint256 id = _task(taskSeed);
        IConcordTypes.TaskState memory st = concord.taskState(id);
        uint32 round = uint32(_bound(roundSeed, 0, uint256(st.headRound) + 3));
        ++nPhantomTries;
        uint32 head = concord.currentRound(id);
        bool allowed = round == st.finalizedRounds && round <= head;
        vm.recordLogs();
        try concord.finalize(id, round, _bound(maxItems, 1, 20)) {
            if (!allowed) phantomSettled = true;
        } catch {}
        _after();
    }

    /// fixSeed on any round number (settled, live, in its submit phase, never opened), after
    /// 0-2 blocks, or rarely after 300 (the anchor ages out of the blockhash window and the
    /// call re-anchors). It may succeed only on a live round past its submit phase.
    function fixSeedAny(uint256 taskSeed, uint32 roundSeed, uint16 blocks) external {
        uint256 id = _task(taskSeed);
        IConcordTypes.TaskState memory st = concord.taskState(id);
        uint32 round = uint32(_bound(roundSeed, st.finalizedRounds > 0 ? st.finalizedRounds - 1 : 0, uint256(st.headRound) + 2));
        vm.roll(block.number + (blocks % 16 == 0 ? 300 : blocks % 3));
        if (blocks % 16 == 0) ++nSeedReanchors;
        ++nSeedTries;
        IConcordTypes.Phase before = concord.phaseOf(id, round);
        uint32 head = concord.currentRound(id);
        bool wasFixed = seedOf[id][round] != 0;
        vm.recordLogs();
        try concord.fixSeed(id, round) returns (bool isFixed) {
            // a fixed seed answers true for good; anything else needs a live round past submit
            bool live = round >= st.finalizedRounds && round <= head;
            bool open = before != IConcordTypes.Phase.Submit && before != IConcordTypes.Phase.Pending;
            if (!wasFixed && !(live && open)) seedBroken = true;
            if (wasFixed && !isFixed) seedBroken = true;
            if (isFixed && concord.checkSeed(id, round) == bytes32(0)) seedBroken = true;
        } catch {}
        _after();
    }

    function join(uint256 actorSeed, uint256 taskSeed) external {
        address who = _actor(actorSeed);
        vm.recordLogs();
        vm.prank(who);
        try concord.join(_task(taskSeed)) {} catch {}
        _after();
    }

    function leave(uint256 actorSeed, uint256 taskSeed) external {
        if (actorSeed % 4 != 0) return; // leaving is rare, or runs would empty the tasks
        address who = _actor(actorSeed);
        vm.recordLogs();
        vm.prank(who);
        try concord.leave(_task(taskSeed)) {} catch {}
        _after();
    }

    function submit(uint256 actorSeed, uint256 taskSeed, uint64 work, uint8 back) external {
        uint256 id = _task(taskSeed);
        address who = trainers[actorSeed % trainers.length];
        uint32 round = concord.currentRound(id);
        IConcordTypes.TaskParams memory p = concord.taskParams(id);
        uint256 lo = round > p.asyncLevel ? round - p.asyncLevel : 0;
        uint32 base = uint32(_bound(back, lo, round));
        // one claim in 16 is above the task's maxWorkUnits and must be refused
        uint64 units = work % 16 == 0 ? uint64(p.maxWorkUnits + 1 + work % 1000) : uint64(_bound(work, 1, 1e6));
        vm.recordLogs();
        vm.prank(who);
        try concord.submit(id, round, base, keccak256(abi.encode(who, round)), bytes32(0), units) {
            if (units > p.maxWorkUnits) overclaimAccepted = true;
            lastSubmitBlock[id][round] = block.number;
            ++nSubmits;
        } catch {}
        _after();
    }

    function commit(uint256 actorSeed, uint256 taskSeed, uint256 rejectSeed, bool altModel) external {
        rejectSeed >>= 1; // stored as rejectSeed + 1 below: no overflow on the largest seeds
        uint256 id = _task(taskSeed);
        address who = validators[actorSeed % validators.length];
        uint32 round = _roundIn(id, IConcordTypes.Phase.Commit, actorSeed);
        uint256 n = concord.roundInfo(id, round).submissions;
        bytes32 next = altModel && rejectSeed % 3 == 0 ? keccak256("alt") : keccak256(abi.encode("model", id, round));
        bytes32 h = concord.commitHash(id, round, _bitmap(n, rejectSeed), next, bytes32(rejectSeed), who);
        vm.recordLogs();
        vm.prank(who);
        try concord.commit(id, round, h) {
            if (n != 0 && seedOf[id][round] == 0) seedBroken = true;
            bytes32 key = keccak256(abi.encode(id, round));
            committedSeed[who][key] = rejectSeed + 1;
            committedAlt[who][key] = next == keccak256("alt");
            ++nCommits;
        } catch {}
        _after();
    }

    /// @dev `honest`: some validator reveals what it committed; otherwise a random validator
    ///      reveals random values, which must be refused.
    function reveal(uint256 actorSeed, uint256 taskSeed, uint256 rejectSeed, bool honest) external {
        uint256 id = _task(taskSeed);
        uint32 round = _roundIn(id, IConcordTypes.Phase.Reveal, actorSeed);
        uint256 n = concord.roundInfo(id, round).submissions;
        bytes32 key = keccak256(abi.encode(id, round));
        address who = validators[actorSeed % validators.length];
        bool altModel = rejectSeed % 2 == 0;
        if (honest) {
            for (uint256 v; v < validators.length; ++v) {
                address cand = validators[(actorSeed % validators.length + v) % validators.length];
                (bool c, bool r) = concord.commitStatus(id, round, cand);
                if (c && !r && committedSeed[cand][key] != 0) {
                    who = cand;
                    rejectSeed = committedSeed[cand][key] - 1;
                    altModel = committedAlt[cand][key];
                    break;
                }
            }
        }
        bytes32 next = altModel ? keccak256("alt") : keccak256(abi.encode("model", id, round));
        vm.recordLogs();
        vm.prank(who);
        try concord.reveal(id, round, _bitmap(n, rejectSeed), next, bytes32(rejectSeed)) {
            ++nReveals;
        } catch {}
        _after();
    }

    function finalize(uint256 taskSeed, uint8 maxItems) external {
        uint256 id = _task(taskSeed);
        uint32 round = concord.taskState(id).finalizedRounds;
        uint256 n = concord.roundInfo(id, round).submissions;
        vm.recordLogs();
        try concord.finalize(id, round, _bound(maxItems, 1, 20)) returns (bool done) {
            if (done) {
                ++nRoundsSettled;
                if (n == 0) ++nEmpty;
            }
        } catch {}
        _after();
    }

    function completeUnbond(uint256 actorSeed) external {
        address who = _actor(actorSeed);
        bool pending = _hasPendingWork(who);
        vm.recordLogs();
        vm.prank(who);
        try concord.completeUnbond() {
            if (pending) unbondedWithPendingWork = true;
            ++nUnbonds;
        } catch {}
        _after();
    }

    function requestUnbond(uint256 actorSeed, uint96 amount) external {
        address who = _actor(actorSeed);
        vm.recordLogs();
        vm.prank(who);
        try concord.requestUnbond(_bound(amount, 1, 300e18)) {} catch {}
        _after();
    }

    function addStake(uint256 actorSeed, uint96 amount) external {
        address who = _actor(actorSeed);
        amount = uint96(_bound(amount, 1, 100e18));
        vm.recordLogs();
        vm.prank(who);
        concord.addStake(amount);
        ghostDeposited += amount;
        ghostStake[who] += amount;
        _after();
    }

    function withdraw(uint256 actorSeed, uint96 amount) external {
        address who = actorSeed % 9 == 8 ? initiator : _actor(actorSeed);
        uint256 bal = concord.balanceOf(who);
        if (bal == 0) return;
        amount = uint96(_bound(amount, 1, bal));
        vm.recordLogs();
        vm.prank(who);
        concord.withdraw(amount);
        ghostWithdrawn += amount;
        ghostCredited[who] -= amount;
        _after();
    }

    function warp(uint16 secs) external {
        vm.recordLogs();
        vm.warp(block.timestamp + _bound(secs, 1, 25));
        _after();
    }

    /// A long pause: phases run out with nobody acting (empty rounds, void rounds, validators
    /// that miss a commit and lose their slot).
    function warpLong(uint16 secs) external {
        if (secs % 6 != 0) return; // rare, or few rounds would see a full set of validators
        vm.recordLogs();
        vm.warp(block.timestamp + _bound(secs, 60, 200));
        _after();
    }

    /// @dev Protocol-driven traffic: do the next honest action the task is waiting for
    ///      (submit, commit, reveal, finalize); a random validator sometimes skips its
    ///      reveal and random trainers get rejected. Exposed three times, two steps each, to weigh it.
    function progress(uint256 taskSeed, uint256 seed) external {
        _progressTwice(taskSeed, seed);
    }

    function progressMore(uint256 taskSeed, uint256 seed) external {
        _progressTwice(taskSeed, seed);
    }

    function progressEvenMore(uint256 taskSeed, uint256 seed) external {
        _progressTwice(taskSeed, seed);
    }

    function _progressTwice(uint256 taskSeed, uint256 seed) internal {
        _progress(_task(taskSeed), seed);
        _progress(_task(taskSeed), uint256(keccak256(abi.encode(seed))));
    }

    function _progress(uint256 id, uint256 seed) internal {
        IConcordTypes.TaskState memory st = concord.taskState(id);
        // a validator removed for a missed commit comes back (as an honest operator would)
        for (uint256 v; v < validators.length && !st.closed; ++v) {
            if (!concord.memberInfo(id, validators[v]).joined) {
                this.join(trainers.length + v, _taskIndex(id));
                return;
            }
        }
        if (concord.phaseOf(id, st.finalizedRounds) == IConcordTypes.Phase.Finalize) {
            this.finalize(_taskIndex(id), uint8(seed));
            return;
        }
        uint32 r = _roundIn(id, IConcordTypes.Phase.Reveal, seed);
        if (concord.phaseOf(id, r) == IConcordTypes.Phase.Reveal && seed % 11 != 0) {
            this.reveal(seed, _taskIndex(id), seed, true); // seed % 11 == 0: a withheld reveal
            return;
        }
        r = _roundIn(id, IConcordTypes.Phase.Commit, seed);
        if (concord.phaseOf(id, r) == IConcordTypes.Phase.Commit) {
            if (concord.roundInfo(id, r).submissions != 0 && seedOf[id][r] == 0) {
                this.fixSeedAny(_taskIndex(id), r, 1); // after one block; a validator then commits
                if (seedOf[id][r] == 0 || concord.phaseOf(id, r) != IConcordTypes.Phase.Commit) return;
            }
            for (uint256 v; v < validators.length; ++v) {
                address who = validators[(seed % validators.length + v) % validators.length];
                (bool c,) = concord.commitStatus(id, r, who);
                if (!c && concord.memberInfo(id, who).joined) {
                    // validators mostly agree (shared verdict seed), sometimes dissent
                    uint256 verdict = seed % 5 == 0 ? seed >> 8 : uint256(keccak256(abi.encode(id, r))) >> 8;
                    this.commit((seed % validators.length + v) % validators.length, _taskIndex(id), verdict, seed % 7 == 0);
                    return;
                }
            }
        }
        uint32 head = concord.currentRound(id);
        if (concord.phaseOf(id, head) != IConcordTypes.Phase.Submit) return;
        for (uint256 i; i < trainers.length; ++i) {
            IConcordTypes.MemberInfo memory m = concord.memberInfo(id, trainers[(seed % trainers.length + i) % trainers.length]);
            if (m.joined && !(m.hasSubmitted && m.lastSubmitRound >= head)) {
                this.submit((seed % trainers.length + i) % trainers.length, _taskIndex(id), uint64(seed), uint8(seed));
                return;
            }
        }
    }

    function _taskIndex(uint256 id) internal view returns (uint256) {
        for (uint256 i; i < tasks.length; ++i) {
            if (tasks[i] == id) return i;
        }
        return 0;
    }

    // --- helpers ----------------------------------------------------------------------------

    function taskCount() external view returns (uint256) {
        return tasks.length;
    }

    /// @dev kind 0: open-ended, large budget; 1: fixed-length (maxRounds 3, budget for exactly
    ///      those); 2: budget-limited (maxRounds 0) with two rounds of budget: it runs dry.
    function _newTask(uint8 asyncLevel, uint8 kind) internal {
        uint256 perRound = 97e18 + 3 + 11e18 + 1;
        IConcordTypes.TaskParams memory p = IConcordTypes.TaskParams({
            specDigest: keccak256("spec"),
            initialModelDigest: keccak256("model-0"),
            trainerRewardPerRound: 97e18 + 3,
            validatorFeePerRound: 11e18 + 1,
            minTrainerStake: 100e18,
            minValidatorStake: 100e18,
            slashAmount: 70e18 + 7,
            submitSeconds: 60,
            commitSeconds: 60,
            revealSeconds: 60,
            maxRounds: kind == 1 ? 3 : 0,
            bountyBps: 3333,
            asyncLevel: asyncLevel,
            minValidators: 2,
            maxWorkUnits: 1e6
        });
        uint256 budget = kind == 0 ? 2000e18 : kind == 1 ? 3 * perRound : 2 * perRound;
        vm.prank(initiator);
        uint256 id = concord.createTask(p, budget);
        tasks.push(id);
        ghostDeposited += budget;
        ghostTaskIn[id] += budget;
    }

    function _fund(address who) internal {
        token.mint(who, 1e30);
        vm.prank(who);
        token.approve(address(concord), type(uint256).max);
    }

    function _task(uint256 seed) internal view returns (uint256) {
        return tasks[seed % tasks.length];
    }

    function _actor(uint256 seed) internal view returns (address) {
        uint256 i = seed % (trainers.length + validators.length);
        return i < trainers.length ? trainers[i] : validators[i - trainers.length];
    }

    /// @dev A live round of the task in `phase` if there is one, else a live round by seed.
    function _roundIn(uint256 id, IConcordTypes.Phase phase, uint256 seed) internal view returns (uint32) {
        IConcordTypes.TaskState memory st = concord.taskState(id);
        for (uint256 r = st.finalizedRounds; r <= st.headRound; ++r) {
            if (concord.phaseOf(id, uint32(r)) == phase) return uint32(r);
        }
        uint256 span = uint256(st.headRound) + 1 - st.finalizedRounds;
        return uint32(st.finalizedRounds + (span == 0 ? 0 : seed % span));
    }

    function _bitmap(uint256 n, uint256 seed) internal pure returns (uint256[] memory w) {
        w = new uint256[]((n + 255) / 256);
        if (n == 0) return w;
        // reject few: each bit with probability 1/4
        uint256 bits = uint256(keccak256(abi.encode(seed, 1))) & uint256(keccak256(abi.encode(seed, 2)));
        w[0] = n >= 256 ? bits : bits & ((uint256(1) << n) - 1);
    }

    function _hasPendingWork(address who) internal view returns (bool) {
        for (uint256 t; t < tasks.length; ++t) {
            uint256 id = tasks[t];
            IConcordTypes.TaskState memory st = concord.taskState(id);
            IConcordTypes.MemberInfo memory m = concord.memberInfo(id, who);
            if (m.hasSubmitted && m.lastSubmitRound >= st.finalizedRounds) return true;
            for (uint256 r = st.finalizedRounds; r <= st.headRound; ++r) {
                (bool committed,) = concord.commitStatus(id, uint32(r), who);
                if (committed) return true;
            }
        }
        return false;
    }

    /// @dev Book every event of the last action into the per-task, per-node and per-account
    ///      ghost ledgers, and check no submission settles twice and no round overpays.
    function _scan(Vm.Log[] memory logs) internal {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(concord)) continue;
            bytes32 sig = logs[i].topics[0];
            if (sig == IConcordEvents.SubmissionRewarded.selector || sig == IConcordEvents.SubmissionRejected.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                uint256 round = uint256(logs[i].topics[2]);
                address trainer = address(uint160(uint256(logs[i].topics[3])));
                bytes32 key;
                if (sig == IConcordEvents.SubmissionRejected.selector) {
                    (uint256 index, uint256 slashed, uint256 bounty) =
                        abi.decode(logs[i].data, (uint256, uint256, uint256));
                    key = keccak256(abi.encode(id, round, index));
                    ++nRejected;
                    ghostStake[trainer] -= slashed;
                    ghostTaskIn[id] += slashed - bounty; // the bounty is credited (BountyPaid)
                } else {
                    (uint256 index, uint256 amount) = abi.decode(logs[i].data, (uint256, uint256));
                    key = keccak256(abi.encode(id, round, index));
                    ++nRewarded;
                    rewardPaid[id][round] += amount;
                    if (rewardPaid[id][round] > 97e18 + 3) overpaid = true;
                    ghostTaskOut[id] += amount;
                    ghostCredited[trainer] += amount;
                }
                if (++settledCount[key] > 1) doubleSettled = true;
            } else if (sig == IConcordEvents.ValidatorPaid.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                uint256 round = uint256(logs[i].topics[2]);
                uint256 fee = abi.decode(logs[i].data, (uint256));
                feePaid[id][round] += fee;
                if (feePaid[id][round] > 11e18 + 1) overpaid = true;
                ghostTaskOut[id] += fee;
                ghostCredited[address(uint160(uint256(logs[i].topics[3])))] += fee;
            } else if (sig == IConcordEvents.BountyPaid.selector) {
                ghostCredited[address(uint160(uint256(logs[i].topics[3])))] += abi.decode(logs[i].data, (uint256));
            } else if (sig == IConcordEvents.ValidatorSlashed.selector) {
                uint256 amount = abi.decode(logs[i].data, (uint256));
                ghostStake[address(uint160(uint256(logs[i].topics[3])))] -= amount;
                ghostTaskIn[uint256(logs[i].topics[1])] += amount;
            } else if (sig == IConcordEvents.BudgetReclaimed.selector) {
                uint256 amount = abi.decode(logs[i].data, (uint256));
                ghostTaskOut[uint256(logs[i].topics[1])] += amount;
                ghostCredited[address(uint160(uint256(logs[i].topics[2])))] += amount;
            } else if (sig == IConcordEvents.UnbondCompleted.selector) {
                address who = address(uint160(uint256(logs[i].topics[1])));
                uint256 amount = abi.decode(logs[i].data, (uint256));
                ghostStake[who] -= amount;
                ghostCredited[who] += amount;
            } else if (sig == IConcordEvents.RoundFinalized.selector) {
                (, bool isVoid,,) = abi.decode(logs[i].data, (bytes32, bool, uint256, uint256));
                if (isVoid) ++nVoid;
            } else if (sig == IConcordEvents.SubmissionUndecided.selector) {
                ++nTies;
            } else if (sig == IConcordEvents.ValidatorRemoved.selector) {
                ++nRemoved;
            } else if (sig == IConcordEvents.SeedAnchored.selector) {
                ++nSeedAnchors;
            } else if (sig == IConcordEvents.CheckSeedFixed.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                uint256 round = uint256(logs[i].topics[2]);
                (bytes32 seed, uint256 sourceBlock) = abi.decode(logs[i].data, (bytes32, uint256));
                // fixed once, from a block after every submission of the round
                if (seedOf[id][round] != 0 || sourceBlock <= lastSubmitBlock[id][round]) seedBroken = true;
                if (sourceBlock >= block.number) seedBroken = true;
                seedOf[id][round] = seed;
                ++nSeedsFixed;
            }
        }
    }

    /// Every node and account the handler drives (the initiator is credited reclaims).
    function accounts() external view returns (address[] memory all) {
        all = new address[](trainers.length + validators.length + 1);
        for (uint256 i; i < trainers.length; ++i) {
            all[i] = trainers[i];
        }
        for (uint256 i; i < validators.length; ++i) {
            all[trainers.length + i] = validators[i];
        }
        all[all.length - 1] = initiator;
    }

    /// @dev Heads and finalized counts only grow; a final model digest never changes.
    function _after() internal {
        _scan(vm.getRecordedLogs());
        ++calls;
        vm.warp(block.timestamp + 1); // every action takes a little time, so runs see many phases
        vm.roll(block.number + 1); // and a block of its own
        for (uint256 t; t < tasks.length; ++t) {
            uint256 id = tasks[t];
            IConcordTypes.TaskState memory st = concord.taskState(id);
            if (st.headRound < lastHead[id] || st.finalizedRounds < lastFinalized[id]) roundsWentBack = true;
            if (st.finalizedRounds > uint256(st.headRound) + 1) roundsWentBack = true;
            lastHead[id] = st.headRound;
            if (st.budget < 97e18 + 3 + 11e18 + 1 && st.finalizedRounds > st.headRound) ++nDry;
            lastFinalized[id] = st.finalizedRounds;
            for (uint256 m = st.finalizedRounds >= 3 ? st.finalizedRounds - 3 : 0; m <= st.finalizedRounds; ++m) {
                (bytes32 d, bool fin) = concord.modelDigest(id, uint32(m));
                if (!fin) roundsWentBack = true;
                if (seenModel[id][m] == bytes32(0)) seenModel[id][m] = d;
                else if (seenModel[id][m] != d) roundsWentBack = true;
            }
        }
    }
}
