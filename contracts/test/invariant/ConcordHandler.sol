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
    /// Set when a round's check seed changed after it was fixed, was anchored before the last
    /// submission, differs from keccak(task, round, anchor | blockhash(anchor - 1) XOR exactly
    /// the revealed shares), or a commit landed in a round with submissions and no seed.
    bool public seedBroken;
    /// Set when a withheld seed share went unslashed, or a validator was slashed twice in a round.
    bool public shareSlashBroken;
    /// Set when a removed validator rejoined before its cooldown ended.
    bool public rejoinedEarly;
    /// Set when an accepted submission was paid other than reward * work / (accepted + tied work).
    bool public proRataBroken;
    /// Set when a top-up was refused though the task could still open a round.
    bool public topUpRefused;

    /// Per-task ledger from the events alone: escrowed in (create, top-ups), paid out (rewards,
    /// fees, reclaims). Slashes no longer reach a task: they are burned.
    mapping(uint256 => uint256) public ghostTaskIn;
    mapping(uint256 => uint256) public ghostTaskOut;
    /// Per-node stake from the calls and events: registered + added - slashed - unbonded.
    mapping(address => uint256) public ghostStake;
    /// Per-account credited balance: credits from events - withdrawals.
    mapping(address => uint256) public ghostCredited;
    /// Slashes less bounties, from SubmissionRejected and ValidatorSlashed; and the sum of the
    /// StakeBurned events (both must equal concord.burned() and the burn address's balance).
    uint256 public ghostSlashedNet;
    uint256 public ghostBurnEvents;

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
    uint256 public nShareCommits;
    uint256 public nShareReveals;
    uint256 public nSharesWithheld;
    uint256 public nRejoinRefused;
    uint256 public nRejoined;
    uint256 public nTopUpsRefused;
    /// Fixed check seed per (task, round) and the last block with a submission per (task, round).
    mapping(uint256 => mapping(uint256 => bytes32)) internal seedOf;
    mapping(uint256 => mapping(uint256 => uint256)) internal lastSubmitBlock;
    /// Per (task, round): the anchor's block value (recorded in the anchoring block), the shares
    /// committed by slot, the masks of committed / revealed shares, the slashed validators.
    mapping(uint256 => mapping(uint256 => bytes32)) internal anchorHash;
    mapping(uint256 => mapping(uint256 => mapping(uint256 => bytes32))) internal shareOf;
    mapping(uint256 => mapping(uint256 => mapping(uint256 => address))) internal shareBy;
    mapping(uint256 => mapping(uint256 => uint64)) internal sharesIn;
    mapping(uint256 => mapping(uint256 => uint64)) internal sharesOut;
    mapping(uint256 => mapping(uint256 => mapping(address => bool))) internal slashedIn;
    /// Per (task, round): work of each submission, and the rewarded indexes with their amounts.
    mapping(uint256 => mapping(uint256 => mapping(uint256 => uint256))) internal workOf;
    mapping(uint256 => mapping(uint256 => uint256[])) internal rewardedIdx;
    mapping(uint256 => mapping(uint256 => uint256[])) internal rewardedAmt;
    /// First head round at which a removed validator may join the task again.
    mapping(uint256 => mapping(address => uint256)) internal rejoinAt;

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
        for (uint256 i; i < 6; ++i) {
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
        for (uint256 i; i < trainers.length + validators.length; ++i) {
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
        IConcordTypes.TaskState memory st = concord.taskState(id);
        uint256 maxRounds = concord.taskParams(id).maxRounds;
        uint256 head = concord.currentRound(id);
        bool finished = st.closed || (maxRounds != 0 && head + 1 >= maxRounds);
        vm.recordLogs();
        vm.prank(initiator);
        try concord.topUp(id, amount) {
            ghostDeposited += amount;
            ghostTaskIn[id] += amount;
            if (finished) phantomSettled = true; // money no round can use
        } catch {
            if (!finished) topUpRefused = true;
            ++nTopUpsRefused;
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
        bool over =
            (p.maxRounds != 0 && st.finalizedRounds >= p.maxRounds) || (st.closed && st.finalizedRounds > st.headRound);
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
        uint32 round =
            uint32(_bound(roundSeed, st.finalizedRounds > 0 ? st.finalizedRounds - 1 : 0, uint256(st.headRound) + 2));
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
        uint256 id = _task(taskSeed);
        uint256 head = concord.currentRound(id);
        bool cooling = head < rejoinAt[id][who];
        vm.recordLogs();
        vm.prank(who);
        try concord.join(id) {
            if (cooling) rejoinedEarly = true;
            if (rejoinAt[id][who] != 0) ++nRejoined;
        } catch {
            if (cooling) ++nRejoinRefused;
        }
        _after();
    }

    /// Whole rounds pass on one task with nobody acting (time warped, each round finalized as it
    /// ends) until a validator removed for a missed commit is past its cooldown, which then joins
    /// again. A run of a few hundred calls seldom keeps one task going for the 17 rounds otherwise,
    /// so without this step no run reached a rejoin after the cooldown.
    function rejoinAfterCooldown(uint256 taskSeed) external {
        uint256 id = _task(taskSeed);
        uint256 v;
        while (
            v < validators.length && (rejoinAt[id][validators[v]] == 0 || concord.memberInfo(id, validators[v]).joined)
        ) {
            ++v;
        }
        if (v == validators.length) return; // nobody removed from this task
        address who = validators[v];
        for (uint256 i; i < 120 && concord.currentRound(id) < rejoinAt[id][who]; ++i) {
            if (concord.taskState(id).closed) return;
            this.warpLong(198); // a whole phase at least: empty rounds run out
            IConcordTypes.TaskState memory st = concord.taskState(id);
            if (concord.phaseOf(id, st.finalizedRounds) == IConcordTypes.Phase.Finalize) {
                this.finalize(_taskIndex(id), type(uint8).max);
            }
        }
        if (concord.currentRound(id) < rejoinAt[id][who]) return;
        // as an operator's node does (ensure_enrolled): a stake slashed below the minimum is topped up first
        IConcordTypes.NodeInfo memory n = concord.nodeInfo(who);
        if (n.role == IConcordTypes.Role.Validator && n.stake - n.unbonding < 100e18) {
            this.addStake(trainers.length + v, 100e18);
        }
        this.join(trainers.length + v, _taskIndex(id));
    }

    /// A validator commits its seed share to the head round (refused outside its submit phase,
    /// twice, or by a validator not joined).
    function commitShare(uint256 actorSeed, uint256 taskSeed) external {
        uint256 id = _task(taskSeed);
        address who = validators[actorSeed % validators.length];
        uint32 round = concord.currentRound(id);
        bytes32 share = _hShare(who, id, round);
        vm.recordLogs();
        vm.prank(who);
        try concord.commitSeedShare(id, round, keccak256(abi.encode(share, who, id, uint256(round)))) {
            shareOf[id][round][concord.memberInfo(id, who).validatorIndex] = share;
            ++nShareCommits;
        } catch {}
        _after();
    }

    /// A validator reveals its share (`honest`), or a wrong one (refused).
    function revealShare(uint256 actorSeed, uint256 taskSeed, bool honest) external {
        uint256 id = _task(taskSeed);
        address who = validators[actorSeed % validators.length];
        uint32 round = _roundIn(id, IConcordTypes.Phase.Commit, actorSeed);
        bytes32 share = honest ? _hShare(who, id, round) : keccak256(abi.encode("wrong", actorSeed));
        vm.recordLogs();
        vm.prank(who);
        try concord.revealSeedShare(id, round, share) {
            if (!honest) seedBroken = true;
            ++nShareReveals;
        } catch {}
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
            workOf[id][round][concord.roundInfo(id, round).submissions - 1] = units;
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
    ///      reveal or share and random trainers get rejected. Exposed three times, three steps each, to weigh it.
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
        // three steps in fact: six validators, their shares and flags make a round longer
        _progress(_task(taskSeed), seed);
        _progress(_task(taskSeed), uint256(keccak256(abi.encode(seed))));
        _progress(_task(taskSeed), uint256(keccak256(abi.encode(seed, 3))));
    }

    function _progress(uint256 id, uint256 seed) internal {
        IConcordTypes.TaskState memory st = concord.taskState(id);
        // a validator removed for a missed commit tries to come back (as an honest operator
        // would); during its cooldown the join is refused and the traffic goes on
        uint256 head0 = concord.currentRound(id);
        for (uint256 v; v < validators.length && !st.closed; ++v) {
            IConcordTypes.MemberInfo memory m = concord.memberInfo(id, validators[v]);
            if (!m.joined && (m.rejoinRound <= head0 || seed % 7 == 0)) {
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
            IConcordTypes.SeedInfo memory si = concord.seedInfo(id, r);
            uint64 pending = si.sharesCommitted & ~si.sharesRevealed;
            // one share in 5 is withheld: the seed waits for shareEnd, the share is slashed
            for (uint256 slot; pending != 0 && block.timestamp < si.shareEnd; ++slot) {
                if (pending & 1 != 0) {
                    if (uint256(keccak256(abi.encode(id, r, slot))) % 5 != 0) {
                        this.revealShare(_validatorIndex(concord.validatorAt(id, slot)), _taskIndex(id), true);
                        return;
                    }
                    ++nSharesWithheld;
                }
                pending >>= 1;
            }
            if (concord.roundInfo(id, r).submissions != 0 && seedOf[id][r] == 0) {
                this.fixSeedAny(_taskIndex(id), r, 1); // fixes it once every share is in, or at shareEnd
                if (seedOf[id][r] == 0 || concord.phaseOf(id, r) != IConcordTypes.Phase.Commit) return;
            }
            for (uint256 v; v < validators.length; ++v) {
                address who = validators[(seed % validators.length + v) % validators.length];
                (bool c,) = concord.commitStatus(id, r, who);
                if (!c && concord.memberInfo(id, who).joined) {
                    // validators mostly agree (shared verdict seed), sometimes dissent
                    // (one in three dissents, so rounds see ties between competing submissions)
                    uint256 verdict = seed % 3 == 0 ? seed >> 8 : uint256(keccak256(abi.encode(id, r))) >> 8;
                    this.commit(
                        (seed % validators.length + v) % validators.length, _taskIndex(id), verdict, seed % 7 == 0
                    );
                    return;
                }
            }
        }
        uint32 head = concord.currentRound(id);
        if (concord.phaseOf(id, head) != IConcordTypes.Phase.Submit) return;
        // validators commit their shares first (nodes do so early), most of the time
        if (seed % 4 != 0) {
            uint64 done = concord.seedInfo(id, head).sharesCommitted;
            for (uint256 v; v < validators.length; ++v) {
                IConcordTypes.MemberInfo memory m = concord.memberInfo(id, validators[v]);
                if (m.joined && done & (uint64(1) << m.validatorIndex) == 0) {
                    this.commitShare(v, _taskIndex(id));
                    return;
                }
            }
        }
        for (uint256 i; i < trainers.length; ++i) {
            IConcordTypes.MemberInfo memory m =
                concord.memberInfo(id, trainers[(seed % trainers.length + i) % trainers.length]);
            if (m.joined && !(m.hasSubmitted && m.lastSubmitRound >= head)) {
                this.submit((seed % trainers.length + i) % trainers.length, _taskIndex(id), uint64(seed), uint8(seed));
                return;
            }
        }
    }

    function _hShare(address v, uint256 id, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("h-share", v, id, round));
    }

    function _validatorIndex(address v) internal view returns (uint256) {
        for (uint256 i; i < validators.length; ++i) {
            if (validators[i] == v) return i;
        }
        return 0;
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
            commitSeconds: kind == 1 ? 60 : 200, // share reveals get a quarter, flags a half
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
                bool validator = m.joined && m.role == IConcordTypes.Role.Validator;
                if (validator && concord.seedInfo(id, uint32(r)).sharesCommitted >> m.validatorIndex & 1 != 0) {
                    return true;
                }
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
            if (sig == IConcordEvents.SubmissionRewarded.selector || sig == IConcordEvents.SubmissionRejected.selector)
            {
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
                    ghostSlashedNet += slashed - bounty; // the bounty is credited (BountyPaid), the rest burned
                } else {
                    (uint256 index, uint256 amount) = abi.decode(logs[i].data, (uint256, uint256));
                    key = keccak256(abi.encode(id, round, index));
                    ++nRewarded;
                    rewardPaid[id][round] += amount;
                    rewardedIdx[id][round].push(index);
                    rewardedAmt[id][round].push(amount);
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
                address v = address(uint160(uint256(logs[i].topics[3])));
                ghostStake[v] -= amount;
                ghostSlashedNet += amount;
                mapping(address => bool) storage once =
                    slashedIn[uint256(logs[i].topics[1])][uint256(logs[i].topics[2])];
                if (once[v]) shareSlashBroken = true; // once per validator and round
                once[v] = true;
            } else if (sig == IConcordEvents.StakeBurned.selector) {
                ghostBurnEvents += abi.decode(logs[i].data, (uint256));
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
                (, bool isVoid, uint256 acceptedWork,) = abi.decode(logs[i].data, (bytes32, bool, uint256, uint256));
                _checkSettled(uint256(logs[i].topics[1]), uint256(logs[i].topics[2]), isVoid, acceptedWork);
                if (isVoid) ++nVoid;
            } else if (sig == IConcordEvents.SubmissionUndecided.selector) {
                ++nTies;
            } else if (sig == IConcordEvents.ValidatorRemoved.selector) {
                address v = address(uint160(uint256(logs[i].topics[3])));
                rejoinAt[uint256(logs[i].topics[1])][v] = uint256(logs[i].topics[2]) + 17; // r + cooldown + 1
                ++nRemoved;
            } else if (sig == IConcordEvents.SeedAnchored.selector) {
                // the anchoring block is this one: its parent's hash is the block value
                anchorHash[uint256(logs[i].topics[1])][uint256(logs[i].topics[2])] = blockhash(block.number - 1);
                ++nSeedAnchors;
            } else if (sig == IConcordEvents.PhaseClosedEarly.selector) {
                if (abi.decode(logs[i].data, (IConcordTypes.Phase)) == IConcordTypes.Phase.Submit) {
                    anchorHash[uint256(logs[i].topics[1])][uint256(logs[i].topics[2])] = blockhash(block.number - 1);
                }
            } else if (sig == IConcordEvents.SeedShareCommitted.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                address v = address(uint160(uint256(logs[i].topics[3])));
                uint256 slot = concord.memberInfo(id, v).validatorIndex;
                sharesIn[id][uint256(logs[i].topics[2])] |= uint64(1 << slot);
                shareBy[id][uint256(logs[i].topics[2])][slot] = v;
            } else if (sig == IConcordEvents.SeedShareRevealed.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                address v = address(uint160(uint256(logs[i].topics[3])));
                sharesOut[id][uint256(logs[i].topics[2])] |= uint64(1) << concord.memberInfo(id, v).validatorIndex;
            } else if (sig == IConcordEvents.CheckSeedFixed.selector) {
                uint256 id = uint256(logs[i].topics[1]);
                uint256 round = uint256(logs[i].topics[2]);
                (bytes32 seed, uint256 anchor, uint256 revealed) = abi.decode(logs[i].data, (bytes32, uint256, uint256));
                // fixed once, anchored at or after the last submission, from exactly the revealed shares
                if (seedOf[id][round] != 0 || anchor < lastSubmitBlock[id][round]) seedBroken = true;
                if (anchor > block.number || revealed != sharesOut[id][round]) seedBroken = true;
                if (seed != _expectedSeed(id, round, anchor, uint64(revealed))) seedBroken = true;
                seedOf[id][round] = seed;
                ++nSeedsFixed;
            }
        }
    }

    /// @dev keccak(task, round, anchor | blockhash(anchor - 1) XOR the revealed shares), bits
    ///      64..255 mixed (IConcord.fixSeed), from the handler's own records.
    function _expectedSeed(uint256 id, uint256 round, uint256 anchor, uint64 revealed) internal view returns (bytes32) {
        uint256 low = type(uint64).max;
        uint256 mix = (uint256(anchorHash[id][round]) & ~low) | anchor;
        for (uint256 slot; revealed != 0; ++slot) {
            if (revealed & 1 != 0) mix ^= uint256(shareOf[id][round][slot]) & ~low;
            revealed >>= 1;
        }
        return keccak256(abi.encode(id, round, mix));
    }

    /// @dev At a round's settlement: every withheld share was slashed, and every paid submission
    ///      got exactly reward * work / (accepted + tied work).
    function _checkSettled(uint256 id, uint256 round, bool isVoid, uint256 acceptedWork) internal {
        uint64 withheld = sharesIn[id][round] & ~sharesOut[id][round];
        for (uint256 slot; withheld != 0; ++slot) {
            if (withheld & 1 != 0 && !slashedIn[id][round][shareBy[id][round][slot]]) shareSlashBroken = true;
            withheld >>= 1;
        }
        if (isVoid) return;
        uint256[] storage idx = rewardedIdx[id][round];
        for (uint256 k; k < idx.length; ++k) {
            if (rewardedAmt[id][round][k] != (97e18 + 3) * workOf[id][round][idx[k]] / acceptedWork) {
                proRataBroken = true;
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
