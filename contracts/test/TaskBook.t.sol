// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";
import {ConcordSettlement} from "../ConcordSettlement.sol";

contract TaskBookTest is ConcordFixture {
    // --- createTask -------------------------------------------------------------------------

    function test_CreateTaskEscrowsBudgetAndOpensRoundZero() public {
        IConcordTypes.TaskParams memory p = _params();
        vm.expectEmit(address(concord));
        emit IConcordEvents.TaskCreated(1, initiator, p, 1000e18);
        vm.expectEmit(address(concord));
        emit IConcordEvents.RoundOpened(1, 0, block.timestamp, REWARD + FEE);
        uint256 id = _createTask(p, 1000e18);
        assertEq(id, 1);
        assertEq(concord.taskCount(), 1);
        assertEq(token.balanceOf(address(concord)), 1000e18);
        IConcordTypes.TaskState memory st = concord.taskState(id);
        assertEq(st.initiator, initiator);
        assertEq(st.budget, 1000e18 - REWARD - FEE);
        assertEq(st.headRound, 0);
        assertEq(st.finalizedRounds, 0);
        assertEq(keccak256(abi.encode(concord.taskParams(id))), keccak256(abi.encode(p)));
        (bytes32 d, bool fin) = concord.modelDigest(id, 0);
        assertEq(d, MODEL0);
        assertTrue(fin);
        (d, fin) = concord.modelDigest(id, 1);
        assertEq(d, bytes32(0));
        assertFalse(fin);
        (uint32 m, bytes32 latest) = concord.latestModel(id);
        assertEq(m, 0);
        assertEq(latest, MODEL0);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending));
        assertEq(concord.currentRound(id), 0);
        _assertConserved();
    }

    function test_RevertWhen_CreateTaskWithZeroDigest() public {
        IConcordTypes.TaskParams memory p = _params();
        p.specDigest = bytes32(0);
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.ZeroDigest.selector));
        p = _params();
        p.initialModelDigest = bytes32(0);
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.ZeroDigest.selector));
    }

    function test_RevertWhen_CreateTaskWithZeroPhaseLength() public {
        IConcordTypes.TaskParams memory p = _params();
        p.submitSeconds = 0;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.ZeroPhaseLength.selector));
        p = _params();
        p.commitSeconds = 0;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.ZeroPhaseLength.selector));
        p = _params();
        p.revealSeconds = 0;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.ZeroPhaseLength.selector));
    }

    function test_RevertWhen_CreateTaskWithAsyncLevelTooHigh() public {
        IConcordTypes.TaskParams memory p = _params();
        p.asyncLevel = 5;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.AsyncLevelTooHigh.selector, 5, 4));
    }

    function test_RevertWhen_CreateTaskWithBountyAboveAll() public {
        IConcordTypes.TaskParams memory p = _params();
        p.bountyBps = 10_001;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.BountyTooHigh.selector, 10_001));
    }

    function test_RevertWhen_CreateTaskWithMinValidatorsOutOfRange() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 0;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.MinValidatorsOutOfRange.selector, 0, 64));
        p.minValidators = 65;
        _expectCreateRevert(p, 1000e18, abi.encodeWithSelector(IConcordErrors.MinValidatorsOutOfRange.selector, 65, 64));
    }

    function test_RevertWhen_CreateTaskBudgetBelowOneRound() public {
        _expectCreateRevert(
            _params(),
            REWARD + FEE - 1,
            abi.encodeWithSelector(IConcordErrors.BudgetBelowOneRound.selector, REWARD + FEE - 1, REWARD + FEE)
        );
    }

    function test_RevertWhen_CreateTaskWithoutAllowance() public {
        address poor = makeAddr("poor");
        token.mint(poor, 1000e18);
        vm.prank(poor);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(concord), 0, 1000e18)
        );
        concord.createTask(_params(), 1000e18);
        assertEq(concord.taskCount(), 0);
    }

    function test_RevertWhen_TaskUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnknownTask.selector, 7));
        concord.taskParams(7);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnknownTask.selector, 7));
        concord.phaseOf(7, 0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnknownTask.selector, 7));
        concord.topUp(7, 1);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnknownTask.selector, 7));
        concord.advance(7);
    }

    function _expectCreateRevert(IConcordTypes.TaskParams memory p, uint256 budget, bytes memory err) internal {
        vm.prank(initiator);
        vm.expectRevert(err);
        concord.createTask(p, budget);
    }

    // --- topUp ------------------------------------------------------------------------------

    function test_TopUpByAnyoneGrowsBudget() public {
        uint256 id = _createTask(_params(), 1000e18);
        vm.expectEmit(address(concord));
        emit IConcordEvents.TaskToppedUp(id, stranger, 50e18, 1000e18 - REWARD - FEE + 50e18);
        vm.prank(stranger);
        concord.topUp(id, 50e18);
        assertEq(concord.taskState(id).budget, 1000e18 - REWARD - FEE + 50e18);
        _assertConserved();
    }

    function test_RevertWhen_TopUpZero() public {
        uint256 id = _createTask(_params(), 1000e18);
        vm.prank(stranger);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.topUp(id, 0);
    }

    /// A round that waited for money opens at the top-up, not back-dated to when it was due.
    function test_TopUpResumesStarvedTaskFromNow() public {
        IConcordTypes.TaskParams memory p = _params();
        uint256 id = _taskWith(p, REWARD + FEE, 1, 2); // exactly one round of budget
        _playRound(id, 0, 0, 1, _words(1), keccak256("m1")); // one accepted submission spends it all
        assertEq(concord.taskState(id).finalizedRounds, 1);
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending), "no money, no round");
        vm.warp(block.timestamp + 1000);
        vm.prank(stranger);
        concord.topUp(id, REWARD + FEE);
        assertEq(concord.taskState(id).headRound, 1);
        IConcordTypes.RoundInfo memory r = concord.roundInfo(id, 1);
        assertEq(r.openAt, block.timestamp);
        assertEq(uint8(r.phase), uint8(IConcordTypes.Phase.Submit));
    }

    // --- reclaimBudget ----------------------------------------------------------------------

    function test_ReclaimBudgetAfterLastRound() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxRounds = 1;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TaskNotOver.selector, id));
        concord.reclaimBudget(id);
        _playRound(id, 0, 0, 1, _words(1), keccak256("m1"));
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending));
        uint256 left = concord.taskState(id).budget;
        assertEq(left, 1000e18 - REWARD - FEE);
        vm.expectEmit(address(concord));
        emit IConcordEvents.BudgetReclaimed(id, initiator, left);
        vm.prank(initiator);
        concord.reclaimBudget(id);
        assertEq(concord.balanceOf(initiator), left);
        assertEq(concord.taskState(id).budget, 0);
        vm.prank(initiator);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.reclaimBudget(id);
        _assertConserved();
    }

    function test_RevertWhen_ReclaimByOtherThanInitiator() public {
        uint256 id = _createTask(_params(), 1000e18);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotInitiator.selector, id, stranger));
        concord.reclaimBudget(id);
    }

    function test_RevertWhen_ReclaimBudgetLimitedTask() public {
        uint256 id = _createTask(_params(), 1000e18); // maxRounds 0: never over
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TaskNotOver.selector, id));
        concord.reclaimBudget(id);
    }

    // --- module and constants ---------------------------------------------------------------

    function test_RevertWhen_SettlementModuleCalledDirectly() public {
        ConcordSettlement module = new ConcordSettlement(IERC20(address(token)));
        vm.expectRevert(IConcordErrors.NotDelegated.selector);
        module.createTask(_params(), 1000e18);
        vm.expectRevert(IConcordErrors.NotDelegated.selector);
        module.finalize(1, 0, 1);
        vm.expectRevert(IConcordErrors.NotDelegated.selector);
        module.join(1);
    }

    function test_ConstantsAndToken() public view {
        assertEq(concord.MAX_VALIDATORS(), 64);
        assertEq(concord.MAX_ASYNC_LEVEL(), 4);
        assertEq(concord.token(), address(token));
        assertEq(concord.unbondDelay(), UNBOND_DELAY);
    }

    function test_RevertWhen_DevTokenMintByNonOwner() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        token.mint(stranger, 1);
    }

    // --- fuzz -------------------------------------------------------------------------------

    function testFuzz_CreateAndTopUpConserve(uint96 reward, uint96 fee, uint256 budget, uint256 topUp) public {
        reward = uint96(bound(reward, 0, 1000e18));
        fee = uint96(bound(fee, 0, 1000e18));
        budget = bound(budget, uint256(reward) + fee, FUND / 2);
        topUp = bound(topUp, 1, FUND / 2);
        IConcordTypes.TaskParams memory p = _params();
        p.trainerRewardPerRound = reward;
        p.validatorFeePerRound = fee;
        uint256 id = _createTask(p, budget);
        vm.prank(stranger);
        concord.topUp(id, topUp);
        assertEq(concord.taskState(id).budget, budget - reward - fee + topUp);
        (uint256 escrow,,) = concord.totals();
        assertEq(escrow, budget + topUp);
        _assertConserved();
    }
}
