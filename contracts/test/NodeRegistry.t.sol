// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

contract NodeRegistryTest is ConcordFixture {
    address internal alice = makeAddr("alice");

    function setUp() public override {
        super.setUp();
        _fund(alice);
    }

    // --- register ---------------------------------------------------------------------------

    function test_RegisterPullsStakeAndRecordsRole() public {
        vm.expectEmit(address(concord));
        emit IConcordEvents.NodeRegistered(alice, IConcordTypes.Role.Trainer, 500e18);
        vm.prank(alice);
        concord.register(IConcordTypes.Role.Trainer, 500e18);
        IConcordTypes.NodeInfo memory n = concord.nodeInfo(alice);
        assertEq(uint8(n.role), uint8(IConcordTypes.Role.Trainer));
        assertEq(n.stake, 500e18);
        assertEq(token.balanceOf(address(concord)), 500e18);
        (, uint256 staked,) = concord.totals();
        assertEq(staked, 500e18);
        _assertConserved();
    }

    function test_RevertWhen_RegisterTwice() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Validator, 1e18);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadyRegistered.selector, alice));
        concord.register(IConcordTypes.Role.Trainer, 1e18);
    }

    function test_RevertWhen_RegisterWithRoleNone() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InvalidRole.selector, IConcordTypes.Role.None));
        concord.register(IConcordTypes.Role.None, 1e18);
    }

    function test_RevertWhen_RegisterWithZeroStake() public {
        vm.prank(alice);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.register(IConcordTypes.Role.Trainer, 0);
    }

    function test_RevertWhen_RegisterWithoutAllowance() public {
        address bob = makeAddr("bob");
        token.mint(bob, 10e18);
        vm.prank(bob);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(concord), 0, 1e18)
        );
        concord.register(IConcordTypes.Role.Trainer, 1e18);
        assertEq(uint8(concord.nodeInfo(bob).role), 0);
    }

    function test_RevertWhen_StakeDoesNotFitUint96() public {
        uint256 huge = uint256(type(uint96).max) + 1;
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedUintDowncast.selector, 96, huge));
        concord.register(IConcordTypes.Role.Trainer, huge);
    }

    // --- addStake ---------------------------------------------------------------------------

    function test_AddStakeGrowsStake() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 1e18);
        vm.expectEmit(address(concord));
        emit IConcordEvents.StakeAdded(alice, 2e18, 3e18);
        concord.addStake(2e18);
        assertEq(concord.nodeInfo(alice).stake, 3e18);
        _assertConserved();
    }

    function test_RevertWhen_AddStakeUnregistered() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotRegistered.selector, alice));
        concord.addStake(1e18);
    }

    function test_RevertWhen_AddStakeZero() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 1e18);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.addStake(0);
    }

    // --- unbond -----------------------------------------------------------------------------

    function test_UnbondAfterDelayCreditsBalance() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        vm.expectEmit(address(concord));
        emit IConcordEvents.UnbondRequested(alice, 4e18, 4e18, block.timestamp + UNBOND_DELAY);
        concord.requestUnbond(4e18);
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.expectEmit(address(concord));
        emit IConcordEvents.UnbondCompleted(alice, 4e18);
        concord.completeUnbond();
        assertEq(concord.nodeInfo(alice).stake, 6e18);
        assertEq(concord.nodeInfo(alice).unbonding, 0);
        assertEq(concord.balanceOf(alice), 4e18);
        uint256 before = token.balanceOf(alice);
        concord.withdraw(4e18);
        assertEq(token.balanceOf(alice), before + 4e18);
        _assertConserved();
    }

    function test_RevertWhen_CompleteUnbondBeforeDelay() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        concord.requestUnbond(4e18);
        uint256 at = block.timestamp + UNBOND_DELAY;
        vm.warp(at - 1);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnbondNotReady.selector, alice, at, at - 1));
        concord.completeUnbond();
    }

    function test_RevertWhen_CompleteUnbondWithNothingRequested() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NothingUnbonding.selector, alice));
        concord.completeUnbond();
    }

    function test_RevertWhen_UnbondMoreThanStake() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        concord.requestUnbond(6e18);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.UnbondExceedsStake.selector, alice, 4e18, 5e18));
        concord.requestUnbond(5e18);
    }

    function test_RevertWhen_UnbondZero() public {
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.requestUnbond(0);
    }

    function test_RevertWhen_UnbondUnregistered() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotRegistered.selector, alice));
        concord.requestUnbond(1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotRegistered.selector, alice));
        concord.completeUnbond();
    }

    function test_RevertWhen_UnbondWithPendingWork() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 0);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.PendingWork.selector, trainers[0], 1));
        concord.requestUnbond(1e18);
        id;
    }

    function test_RevertWhen_CompleteUnbondAfterJoiningAgain() public {
        uint256 id = _createTask(_params(), 1000e18);
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 500e18);
        concord.requestUnbond(100e18);
        concord.join(id); // 400e18 not unbonding still covers the 100e18 minimum
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.PendingWork.selector, alice, 1));
        concord.completeUnbond();
    }

    function test_UnbondingStakeDoesNotCountForJoining() public {
        uint256 id = _createTask(_params(), 1000e18);
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Trainer, 150e18);
        concord.requestUnbond(100e18);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientStake.selector, alice, 50e18, 100e18));
        concord.join(id);
    }

    // --- fuzz -------------------------------------------------------------------------------

    function testFuzz_StakeAndUnbondConserveTokens(uint96 stake, uint96 extra, uint96 unbond) public {
        stake = uint96(bound(stake, 1, FUND / 2));
        extra = uint96(bound(extra, 1, FUND / 2));
        uint256 total = uint256(stake) + extra;
        unbond = uint96(bound(unbond, 1, total));
        vm.startPrank(alice);
        concord.register(IConcordTypes.Role.Validator, stake);
        concord.addStake(extra);
        concord.requestUnbond(unbond);
        _assertConserved();
        vm.warp(block.timestamp + UNBOND_DELAY);
        concord.completeUnbond();
        assertEq(concord.nodeInfo(alice).stake, total - unbond);
        assertEq(concord.balanceOf(alice), unbond);
        concord.withdraw(unbond);
        assertEq(token.balanceOf(alice), FUND - (total - unbond));
        _assertConserved();
    }
}
